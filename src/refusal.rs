//! How a refusal is worded, in one place for every program: the log line
//! that names the limit, the count and when room frees up, and the SMTP
//! reply line the sender sees.

use crate::admit::{Admission, Blocked, Full};
use crate::client::printable;
use crate::counter::Block;
use crate::limits::format_period;
use crate::log::duration;
use crate::time::Time;

/// The wait until `at`, rounded up to whole seconds and at least `1s`, so it
/// never promises room before there is some.
pub fn wait(now: Time, at: Time) -> String {
    duration(Time::from_millis(now.millis_until(at)).secs_up().max(1))
}

/// `room in 12m`, or `until reset` for a limit no wait can help.
pub fn room(now: Time, room_at: Option<Time>) -> String {
    room_at.map_or_else(
        || "until reset".to_string(),
        |t| format!("room in {}", wait(now, t)),
    )
}

/// One full limit of `client`'s: `limit 100/1h reached (100 counted, room in
/// 12m)`, prefixed by the counter's name when it is not the client's own (a
/// domain's shared counter). `asked` is the recipients asked for at once:
/// more than one is said, and more than the limit says so.
pub fn limit(client: &[u8], f: &Full, now: Time, asked: u64) -> String {
    let whose = if f.label == client {
        String::new()
    } else {
        format!("{} ", printable(&f.label))
    };
    if asked > f.item.max {
        return format!(
            "{whose}limit {} is below the message's {asked} recipients",
            f.item
        );
    }
    let asked = if asked > 1 {
        format!(", {asked} asked;")
    } else {
        ",".to_string()
    };
    format!(
        "{whose}limit {} reached ({} counted{asked} {})",
        f.item,
        f.count,
        room(now, f.room_at)
    )
}

/// `blocked by the administrator until 2026-12-02 10:00:00Z: REASON`, with
/// the counter's name first when it is not the client's own.
pub fn blocked(client: &[u8], b: &Blocked) -> String {
    let whose = if b.label == client {
        String::new()
    } else {
        format!("{} ", printable(&b.label))
    };
    format!(
        "{whose}blocked by the administrator {}: {}",
        until(&b.block),
        b.block.reason
    )
}

/// `until 2026-12-02 10:00:00Z`, or `until unblocked` for a block with no end.
pub fn until(b: &Block) -> String {
    match b.until {
        0 => "until unblocked".to_string(),
        t => format!("until {}", crate::journal::utc(t)),
    }
}

/// The block, then every full limit of a refusal, joined: what a log line
/// says after the client's name.
pub fn limits(client: &[u8], result: &Admission, now: Time, asked: u64) -> String {
    let block = result.blocked.iter().map(|b| blocked(client, b));
    let full = result.full.iter().map(|f| limit(client, f, now, asked));
    block.chain(full).collect::<Vec<String>>().join("; ")
}

/// The plug-in's log line: `refused web1@x: limit 100/1h reached (100
/// counted, room in 12m); recipient a@b`.
pub fn log_line(
    client: &[u8],
    result: &Admission,
    now: Time,
    monitor: bool,
    recipient: &[u8],
) -> String {
    let what = if monitor {
        "monitor: would refuse"
    } else {
        "refused"
    };
    format!(
        "{what} {}: {}; recipient {}",
        printable(client),
        limits(client, result, now, 1),
        printable(recipient)
    )
}

/// The SMTP reply for a refusal, one line well under qmail-smtpd's 1,021
/// bytes: `451 4.7.1 You reached your limit of 100 recipients per 1h; try
/// again in 12m`. `None` without a full limit.
pub fn reply(code: u16, client: &[u8], result: &Admission, now: Time) -> Option<String> {
    let mut line = format!("{code} 4.7.1 {}", text(client, result, now)?);
    line.truncate(900);
    Some(line)
}

/// What a refused sender is told, without a reply code (each front end puts
/// its own: qmail's fd 4 line, Postfix's `action=`): which limit and when
/// room frees up. A domain's shared counter says whose it is, so that a user
/// does not think their own account was cut off. It never tells the count.
/// `None` without a full limit.
pub fn text(client: &[u8], result: &Admission, now: Time) -> Option<String> {
    if let Some(b) = &result.blocked {
        let text = blocked(client, b);
        let mut first = text.chars();
        return Some(match first.next() {
            Some(c) => format!("{}{}", c.to_uppercase(), first.as_str()),
            None => text,
        });
    }
    let f = result.full.first()?;
    let when = match result.room_at() {
        Some(t) => format!("try again in {}", wait(now, t)),
        None => "ask your provider to lift it".to_string(),
    };
    let per = f
        .item
        .period
        .map_or(String::new(), |p| format!(" per {}", format_period(p)));
    let whose = if f.label == client {
        "You reached your".to_string()
    } else {
        let domain = f.label.strip_prefix(b"@").unwrap_or(&f.label);
        format!("Your domain {} reached its", printable(domain))
    };
    Some(format!(
        "{whose} limit of {} recipients{per}; {when}",
        f.item.max
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Item;

    fn full(label: &str, max: u64, period: Option<u32>, room_at: Option<Time>) -> Full {
        Full {
            label: label.as_bytes().to_vec(),
            item: Item { max, period },
            count: max,
            room_at,
        }
    }

    #[test]
    fn a_wait_is_rounded_up_and_never_zero() {
        let now = Time::from_millis(10_000);
        assert_eq!(wait(now, Time::from_millis(10_001)), "1s");
        assert_eq!(wait(now, Time::from_millis(12_001)), "3s");
        assert_eq!(wait(now, Time::from_millis(5_000)), "1s");
    }

    #[test]
    fn own_and_domain_limits_are_worded_apart() {
        let now = Time::from_secs(1_000);
        let own = full("u@x", 100, Some(3600), Some(Time::from_secs(1_720)));
        assert_eq!(
            limit(b"u@x", &own, now, 1),
            "limit 100/1h reached (100 counted, room in 12m)"
        );
        let domain = full("@x", 5, None, None);
        assert_eq!(
            limit(b"u@x", &domain, now, 2),
            "@x limit 5 reached (5 counted, 2 asked; until reset)"
        );
        assert_eq!(
            limit(b"u@x", &domain, now, 9),
            "@x limit 5 is below the message's 9 recipients"
        );
        let refusal = Admission {
            full: vec![domain],
            ..Admission::default()
        };
        assert_eq!(
            reply(451, b"u@x", &refusal, now).unwrap(),
            "451 4.7.1 Your domain x reached its limit of 5 recipients; ask your provider to lift it"
        );
    }
}

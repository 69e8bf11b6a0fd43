//! How a refusal of local mail reads. The administrator (syslog) gets every
//! count and limit; the caller (its stderr) is told which limit was reached,
//! but a counter it may share with others (an `@domain` aggregate, a name it
//! was mapped to or asked for) is named without its count or its limit, so a
//! site cannot watch another's sending.

use crate::admit::Full;
use crate::client::printable;
use crate::log;

/// The full limits, joined by `; `. `own` is the caller's client name;
/// `shared` says that counter may be another's too.
pub fn describe(
    full: &[Full],
    own: &[u8],
    shared: bool,
    n: u64,
    now: u64,
    for_caller: bool,
) -> String {
    let parts: Vec<String> = full
        .iter()
        .map(|f| {
            let other = f.label != own;
            one(f, n, now, for_caller && (shared || other), other)
        })
        .collect();
    parts.join("; ")
}

fn one(f: &Full, n: u64, now: u64, hidden: bool, other: bool) -> String {
    let whose = if other {
        format!("{} ", printable(&f.label))
    } else {
        String::new()
    };
    if hidden {
        return if n > f.item.max {
            format!("{whose}shared limit is below the message's {n} recipients")
        } else {
            format!("{whose}shared limit reached")
        };
    }
    if n > f.item.max {
        return format!(
            "{whose}limit {} is below the message's {n} recipients",
            f.item
        );
    }
    let room = match f.room_at {
        Some(t) => format!("room in {}", log::duration(t.saturating_sub(now).max(1))),
        None => "until reset".to_string(),
    };
    format!(
        "{whose}limit {} reached ({} counted, {n} asked; {room})",
        f.item, f.count
    )
}

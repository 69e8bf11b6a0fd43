//! Counters in Redis: the same text as a counter file (format 2, with its
//! checksum), one key per counter, changed by an optimistic transaction.
//!
//! `WATCH` the decision's keys and `MGET` them (one round trip), run the
//! caller's decision in Rust on the parsed counters, then `MULTI`, a `SET`
//! or `DEL` per key, `EXEC` (a second round trip). If any watched key changed
//! meanwhile, `EXEC` does nothing and answers nil, and the whole step runs
//! again on the new values, until the deadline. So every counter of one
//! decision rises together or not at all, across hosts, and the window
//! arithmetic and the counter format are the files' own: no script in the
//! server holds a second copy of either.
//!
//! Keys are `overlimit:{TAG}:FILE`, FILE the counter's file name (see
//! `store.rs`: it never holds a brace). TAG, the part Redis Cluster hashes,
//! is the same for every counter one decision can touch: a named client's
//! domain aggregate's file name (`@example.com`) for the client and the
//! aggregate alike; for an address client and the ranges it falls in, which
//! may be any prefix, one tag for all (`@ip`); a name without a domain, its
//! own. The key is made from the file name alone, so every program and host
//! names a counter alike and `SCAN` gives the file name back. (A client name
//! over 100 bytes has a hashed file name, which keeps no domain: its tag is
//! its own, and only a Cluster would notice.)
//!
//! A counter whose limits are all windows expires by itself once the
//! longest window (plus a bucket) has passed since it last rose; one with a
//! classic limit, or none, keeps its count until the sweep, as a file does.

use super::conn::Conn;
use super::resp::Reply;
use crate::backend::{Change, Expiry, Found};
use crate::client::range_spelled;
use crate::counter::Counter;
use crate::error::Internal;
use crate::store::domain_file;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Every key of ours starts so.
pub const PREFIX: &[u8] = b"overlimit:";

/// The key of the counter file `file` (see the top of the file).
pub fn key(file: &str) -> Vec<u8> {
    let tag = label_of(file)
        .and_then(|l| tag(&l))
        .unwrap_or_else(|| file.to_string());
    [PREFIX, b"{", tag.as_bytes(), b"}:", file.as_bytes()].concat()
}

/// The tag of a counter's label, as the top of the file says. Read from the
/// label's bytes alone, never through `Client` (which reads
/// `OVERLIMIT_ATCHARS`): every host must name a counter alike.
fn tag(label: &[u8]) -> Option<String> {
    let ip = |s: &[u8]| std::str::from_utf8(s).is_ok_and(|s| s.parse::<IpAddr>().is_ok());
    if let Some(rest) = label.strip_prefix(b"@") {
        return Some(if range_spelled(rest) {
            "@ip".to_string()
        } else {
            domain_file(rest)
        });
    }
    if ip(label) {
        return Some("@ip".to_string());
    }
    let at = label.iter().rposition(|&b| b == b'@')?;
    let domain = &label[at + 1..];
    (!domain.is_empty() && !range_spelled(domain)).then(|| domain_file(domain))
}

/// The label a file name was made from (see `store::client_file`): the
/// name itself, or its hex decoded; `None` for a hashed long name, whose
/// key then takes the file name as its tag.
fn label_of(file: &str) -> Option<Vec<u8>> {
    let (lead, hex): (&[u8], &str) = if let Some(h) = file.strip_prefix("@=") {
        (b"@", h)
    } else if let Some(h) = file.strip_prefix('=') {
        (b"", h)
    } else {
        return Some(file.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok());
    let mut label = lead.to_vec();
    for b in bytes {
        label.push(b?);
    }
    Some(label)
}

/// The counter's file name in a key of ours.
pub fn file_of(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix(b"{")?;
    let end = rest.windows(2).position(|w| w == b"}:")?;
    Some(&rest[end + 2..])
}

/// Runs `decide` on what is at `keys` (in order) and applies the
/// changes it returns, one per key, atomically; again on fresh values if
/// another client changed a key meanwhile. `decide` may run several times
/// and must not act on anything but its return value.
pub fn transact<R>(
    conn: &mut Conn,
    keys: &[Vec<u8>],
    mut decide: impl FnMut(Vec<Found>) -> Result<(R, Vec<Change>), Internal>,
) -> Result<R, Internal> {
    let mut attempt: u32 = 0;
    loop {
        let mut watch: Vec<&[u8]> = vec![b"WATCH"];
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        for k in keys {
            watch.push(k);
            mget.push(k);
        }
        let replies = conn.pipeline(&[watch, mget])?;
        let values = match replies.as_slice() {
            [Reply::Status(_), Reply::Array(Some(v))] if v.len() == keys.len() => v,
            _ => return Err(conn.error(&format!("WATCH/MGET answered {replies:?}"))),
        };
        let counters = values.iter().map(found).collect();
        // A decision that fails or changes nothing leaves the keys watched:
        // the UNWATCH goes out with the connection's next command (the
        // plug-in closes it instead, which unwatches too).
        let (result, changes) = match decide(counters) {
            Ok(done) => done,
            Err(e) => {
                conn.defer("UNWATCH", &[b"UNWATCH"]);
                return Err(e);
            }
        };
        if changes.len() != keys.len() {
            conn.defer("UNWATCH", &[b"UNWATCH"]);
            return Err(conn.error("a decision gave not one change per counter; none changed"));
        }
        if changes.iter().all(|c| *c == Change::Keep) {
            conn.defer("UNWATCH", &[b"UNWATCH"]);
            return Ok(result);
        }
        if commit(conn, keys, &changes)? {
            return Ok(result);
        }
        attempt += 1;
        back_off(conn, attempt)?;
    }
}

fn found(value: &Reply) -> Found {
    match value {
        Reply::Bulk(None) => Found::Missing,
        Reply::Bulk(Some(text)) => match Counter::parse(text, text.len() as u64) {
            Some(c) => Found::Counter(c),
            None => Found::Damaged,
        },
        _ => Found::Damaged,
    }
}

/// `MULTI`, the changes, `EXEC`; false when a watched key changed.
fn commit(conn: &mut Conn, keys: &[Vec<u8>], changes: &[Change]) -> Result<bool, Internal> {
    let texts: Vec<(Vec<u8>, String)> = changes
        .iter()
        .map(|c| match c {
            Change::Set(counter, Expiry::After(t)) => {
                (counter.to_text(), t.as_millis().max(1).to_string())
            }
            Change::Set(counter, _) => (counter.to_text(), String::new()),
            _ => (Vec::new(), String::new()),
        })
        .collect();
    let mut cmds: Vec<Vec<&[u8]>> = vec![vec![b"MULTI"]];
    for ((k, c), (text, ms)) in keys.iter().zip(changes).zip(&texts) {
        match c {
            Change::Keep => {}
            Change::Delete => cmds.push(vec![b"DEL", k]),
            Change::Set(_, Expiry::Never) => cmds.push(vec![b"SET", k, text]),
            Change::Set(_, Expiry::AsBefore) => cmds.push(vec![b"SET", k, text, b"KEEPTTL"]),
            Change::Set(_, Expiry::After(_)) => {
                cmds.push(vec![b"SET", k, text, b"PX", ms.as_bytes()])
            }
        }
    }
    cmds.push(vec![b"EXEC"]);
    let replies = conn.pipeline(&cmds)?;
    if let Some(e) = replies.iter().find_map(|r| match r {
        Reply::Error(e) => Some(e),
        _ => None,
    }) {
        return Err(conn.error(&format!("MULTI/EXEC: {e}; no counter changed")));
    }
    match replies.last() {
        Some(Reply::Array(None)) => Ok(false),
        Some(Reply::Array(Some(_))) => Ok(true),
        other => Err(conn.error(&format!("EXEC answered {other:?}"))),
    }
}

/// A short, growing, jittered pause after a conflict, so that clients
/// racing for one key do not keep colliding in step; an error once the
/// deadline leaves no time for another attempt.
fn back_off(conn: &Conn, attempt: u32) -> Result<(), Internal> {
    let jitter = u64::from(std::process::id())
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        );
    let cap = 50u64 << attempt.min(5); // up to 1.6 ms
    let pause = Duration::from_micros(jitter % cap);
    if Instant::now() + pause >= conn.deadline() {
        return Err(conn.error(&format!(
            "{attempt} attempts each lost to another host changing the same counters; \
             none changed"
        )));
    }
    std::thread::sleep(pause);
    Ok(())
}

/// Every key of ours, by `SCAN` (which never blocks the server as `KEYS`
/// would), sorted and without the duplicates `SCAN` may return.
pub fn all_keys(conn: &mut Conn) -> Result<Vec<Vec<u8>>, Internal> {
    let pattern = [PREFIX, b"*"].concat();
    let mut cursor = b"0".to_vec();
    let mut keys = Vec::new();
    loop {
        let reply = conn.call(&[b"SCAN", &cursor, b"MATCH", &pattern, b"COUNT", b"1000"])?;
        let Reply::Array(Some(parts)) = reply else {
            return Err(conn.error(&format!("SCAN answered {reply:?}")));
        };
        let (next, batch) = match parts.as_slice() {
            [Reply::Bulk(Some(c)), Reply::Array(Some(b))] => (c.clone(), b),
            _ => return Err(conn.error(&format!("SCAN answered {parts:?}"))),
        };
        for k in batch {
            if let Reply::Bulk(Some(k)) = k {
                keys.push(k.clone());
            }
        }
        if next == b"0" {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The counter at `key`: `Ok(None)` when missing, an error when its value
/// is not a counter.
pub fn read(conn: &mut Conn, key: &[u8]) -> Result<Option<Counter>, Internal> {
    match conn.call(&[b"GET", key])? {
        Reply::Bulk(None) => Ok(None),
        Reply::Bulk(Some(text)) => match Counter::parse(&text, text.len() as u64) {
            Some(c) => Ok(Some(c)),
            None => Err(conn.error(&format!("{}: not a counter", String::from_utf8_lossy(key)))),
        },
        other => Err(conn.error(&format!("GET answered {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_in(key: &[u8]) -> &[u8] {
        let open = key.iter().position(|&b| b == b'{').unwrap();
        let close = key.iter().position(|&b| b == b'}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn one_decisions_keys_share_a_cluster_slot() {
        use crate::counted::Counted;
        let file = |label: &[u8]| Counted::from_label(label).unwrap().file();
        let user = key(&file(b"web1@example.com"));
        let domain = key(&file(b"@example.com"));
        assert_eq!(tag_in(&user), b"@example.com");
        assert_eq!(tag_in(&user), tag_in(&domain));
        // Names kept as hex in their file name still find their domain.
        let odd = key(&file(b"Odd Name@example.com"));
        assert_eq!(tag_in(&odd), b"@example.com");
        assert_eq!(tag_in(&key(&file(b"192.0.2.7"))), b"@ip");
        assert_eq!(tag_in(&key(&file(b"2001:db8::7"))), b"@ip");
        assert_eq!(tag_in(&key(&file(b"@192.0.2.0/24"))), b"@ip");
        assert_eq!(tag_in(&key(&file(b"web1"))), b"web1");
        let long = file(&[b'a'; 300]);
        assert_eq!(
            tag_in(&key(&long)),
            long.as_bytes(),
            "a hashed name is its own tag"
        );
        assert_eq!(file_of(&user), Some(&b"web1@example.com"[..]));
        assert_eq!(file_of(b"other:key"), None);
    }
}

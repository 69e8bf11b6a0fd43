//! How a refusal of local mail reads. The administrator (syslog) gets every
//! count and limit; the caller (its stderr) is told which limit was reached,
//! but a counter it may share with others (an `@domain` aggregate, a name it
//! was mapped to or asked for) is named without its count or its limit, so a
//! site cannot watch another's sending.

use crate::admit::{Admission, Full};
use crate::client::printable;
use crate::time::Time;

/// The full limits, joined by `; `. `own` is the caller's client name;
/// `shared` says that counter may be another's too. What the administrator
/// reads is the engine's one wording (`refusal::limit`).
pub fn describe(
    result: &Admission,
    own: &[u8],
    shared: bool,
    n: u64,
    now: Time,
    for_caller: bool,
) -> String {
    let block = result
        .blocked
        .iter()
        .map(|b| crate::refusal::blocked(own, b));
    let parts: Vec<String> = block
        .chain(result.full.iter().map(|f| {
            let other = f.label != own;
            if for_caller && (shared || other) {
                hidden(f, n, other)
            } else {
                crate::refusal::limit(own, f, now, n)
            }
        }))
        .collect();
    parts.join("; ")
}

/// A shared counter's refusal, for the caller: which one, not its numbers.
fn hidden(f: &Full, n: u64, other: bool) -> String {
    let whose = if other {
        format!("{} ", printable(&f.label))
    } else {
        String::new()
    };
    if n > f.item.max {
        format!("{whose}shared limit is below the message's {n} recipients")
    } else {
        format!("{whose}shared limit reached")
    }
}

//! `overlimit check`: every bad line of the control file with its number and
//! the reason, and warnings for lines that can never take effect.

use super::{counted, parse_file, Parsed};
use crate::compiled::{cdb_path, fingerprint};
use crate::control::{Key, Net};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

pub const USAGE: &str = "usage: overlimit check

Reads RELAYLIMITS and reports each line the plug-in would skip (no colon, bad
number, unknown unit, bad range, empty limit) with its number and reason, then
warnings: a line overridden by a later one, a range with host bits set, a
range shadowed by longer ones, a stale cdb. Exit 0 when no line is bad, 1
otherwise, 2 when the file cannot be read.";

pub fn run(control: &Path) -> i32 {
    let shown = control.display();
    let parsed = match parse_file(control) {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("overlimit: {shown}: missing: every client is unlimited (still counted)");
            return 1;
        }
        Err(e) => {
            eprintln!("overlimit: {e}");
            return 2;
        }
    };
    // Findings are diagnostics, on stderr as the contract asks; the summary
    // is the answer, on stdout, so `overlimit check >/dev/null` shows only
    // what needs fixing.
    for (line, reason) in &parsed.errors {
        eprintln!("{shown}:{line}: error: {reason}");
    }
    let warnings = warnings(&parsed);
    for (line, w) in &warnings {
        eprintln!("{shown}:{line}: warning: {w}");
    }
    let stale = cdb_warning(control, &parsed);
    if let Some(w) = &stale {
        eprintln!("{w}");
    }
    println!(
        "{shown}: {}, {}, {}",
        counted(parsed.entries.len(), "entry", "entries"),
        counted(parsed.errors.len(), "error", "errors"),
        counted(
            warnings.len() + usize::from(stale.is_some()),
            "warning",
            "warnings"
        )
    );
    i32::from(!parsed.errors.is_empty())
}

/// Overridden lines, masked ranges and shadowed ranges, in line order.
pub fn warnings(parsed: &Parsed) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut last: BTreeMap<&Key, usize> = BTreeMap::new();
    for (line, e) in &parsed.entries {
        if let Some(earlier) = last.insert(&e.key, *line) {
            out.push((earlier, format!("overridden by line {line}")));
        }
        if let (true, Key::Range(net)) = (e.masked, &e.key) {
            out.push((*line, format!("range has host bits set; read as {net}")));
        }
    }
    let ranges: BTreeSet<Net> = last
        .keys()
        .filter_map(|k| {
            if let Key::Range(n) = k {
                Some(*n)
            } else {
                None
            }
        })
        .collect();
    let hosts: BTreeSet<IpAddr> = last
        .keys()
        .filter_map(|k| {
            if let Key::Client(c) = k {
                crate::client::parse_ip(c)
            } else {
                None
            }
        })
        .collect();
    for net in &ranges {
        if covered(*net, net.len, &ranges, &hosts) {
            out.push((
                last[&Key::Range(*net)],
                format!(
                    "range {net} is shadowed: longer prefixes or address lines cover all of it"
                ),
            ));
        }
    }
    out.sort();
    out
}

/// Whether every address of `net` is matched by something more specific
/// than a prefix of `outer` bits.
fn covered(net: Net, outer: u8, ranges: &BTreeSet<Net>, hosts: &BTreeSet<IpAddr>) -> bool {
    let bits = if net.addr.is_ipv4() { 32 } else { 128 };
    if net.len > outer && ranges.contains(&net) {
        return true;
    }
    if net.len == bits {
        return hosts.contains(&net.addr);
    }
    // Only split where something lies inside; otherwise part of it is bare.
    let inside = ranges
        .iter()
        .any(|r| r.len > net.len && net.contains(r.addr))
        || hosts.iter().any(|h| net.contains(*h));
    if !inside {
        return false;
    }
    let low = Net::new(net.addr, net.len + 1);
    let high = Net::new(flip(net.addr, net.len), net.len + 1);
    covered(low, outer, ranges, hosts) && covered(high, outer, ranges, hosts)
}

/// `addr` with bit `n` (from the left) set.
fn flip(addr: IpAddr, n: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) | (1 << (31 - n))).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) | (1 << (127 - n))).into()),
    }
}

fn cdb_warning(control: &Path, parsed: &Parsed) -> Option<String> {
    let path = cdb_path(control);
    let file = std::fs::File::open(&path).ok()?;
    let stamp = crate::cdb::Reader::new(file)
        .get(crate::compiled::SOURCE)
        .ok()
        .flatten();
    (stamp != Some(fingerprint(&parsed.meta))).then(|| {
        format!(
            "{}: warning: stale, the plug-in reads the text; run `overlimit compile`",
            path.display()
        )
    })
}

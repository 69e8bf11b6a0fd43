//! `overlimit check`: every bad line of the control file with its number and
//! the reason, every line that parses but can never match, every counter
//! the plug-in could not write, and warnings for lines that take no effect.

use super::{counted, exit, parse_file, Parsed};
use crate::compiled::{Compiled, Standing};
use crate::control::{Key, Net};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub const USAGE: &str = "usage: overlimit check [--replay [JOURNAL]]

Reads RELAYLIMITS and reports each line the plug-in would skip (no colon, bad
number, unknown unit, bad range, empty limit) and each line no client can
ever match (300.1.2.3:10, *example.org:10), with its number and reason; each
counter in OVERLIMITDIR that the counter directory's owner (the qmail-smtpd
user) cannot write (with OVERLIMIT_REDIS: whether the server answers); where
the local-mail programs are installed, each owner, mode, mount or account
their privilege model needs and lacks; then warnings: a line overridden by a
later one, a range
with host bits set, a range shadowed by longer ones, a stale cdb. Exit 0 when
nothing but warnings was found, 1 when something was (a missing control file
included), 2 when the file cannot be read.

--replay then judges the journal's episodes (OVERLIMITDIR/.journal and .1,
or JOURNAL and JOURNAL.1) and the current counters against this control
file, meant to be the edited one (RELAYLIMITS=relaylimits.new): would
refuse, unknown (the journal cannot tell), would pass; then the counters
over a limit now. See overlimit(8) for what the journal can tell.";

/// What is wrong with the local-mail programs' privilege model (accounts,
/// owners, modes, mounts, the deliverer), where they are installed: a broken
/// one refuses every site's mail. A host without them (the plug-in alone)
/// has nothing to report.
fn local_install() -> Vec<String> {
    use crate::local::{COUNTER, FRONT};
    if Path::new(COUNTER).exists() || Path::new(FRONT).exists() {
        crate::local::install::findings()
    } else {
        Vec::new()
    }
}

/// Counters named one by one at most; the rest are summed up.
const MAX_LISTED: usize = 20;

pub fn run(control: &Path, dir: &Path, redis: Option<&str>) -> i32 {
    let shown = control.display();
    // First, as it holds whatever the control file says.
    let install = local_install();
    for f in &install {
        eprintln!("overlimit: local mail: {f}");
    }
    let parsed = match parse_file(control) {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("overlimit: {shown}: missing: every client is unlimited (still counted)");
            return exit::PROBLEMS;
        }
        Err(e) => {
            eprintln!("overlimit: {e}");
            return exit::TROUBLE;
        }
    };
    // Findings are diagnostics, on stderr as the contract asks; the summary
    // is the answer, on stdout, so `overlimit check >/dev/null` shows only
    // what needs fixing.
    for (line, reason) in &parsed.errors {
        eprintln!("{shown}:{line}: error: {reason}");
    }
    let never = never_matching(&parsed);
    for (line, reason) in &never {
        eprintln!("{shown}:{line}: error: can never match: {reason}");
    }
    let stuck = match redis {
        None => unwritable_counters(dir),
        Some(url) => unreachable_server(dir, url),
    };
    for s in &stuck {
        eprintln!("{s}");
    }
    let mut warnings = warnings(&parsed);
    warnings.extend(cdb_warning(control, &parsed).map(|w| (0, w)));
    for (line, w) in &warnings {
        if *line == 0 {
            eprintln!("{w}");
        } else {
            eprintln!("{shown}:{line}: warning: {w}");
        }
    }
    let problems = parsed.errors.len() + never.len();
    println!(
        "{shown}: {}, {}, {}{}{}",
        counted(parsed.entries.len(), "entry", "entries"),
        counted(problems, "error", "errors"),
        counted(warnings.len(), "warning", "warnings"),
        match (stuck.is_empty(), redis) {
            (true, _) => String::new(),
            (false, None) => format!(", counters the plug-in cannot write in {}", dir.display()),
            (false, Some(_)) => ", the counters' server (OVERLIMIT_REDIS) cannot be used".into(),
        },
        if install.is_empty() {
            String::new()
        } else {
            format!(
                ", {}",
                counted(install.len(), "install problem", "install problems")
            )
        }
    );
    if problems > 0 || !stuck.is_empty() || !install.is_empty() {
        exit::PROBLEMS
    } else {
        exit::OK
    }
}

/// Lines that parse but that no client can ever meet.
pub fn never_matching(parsed: &Parsed) -> Vec<(usize, String)> {
    parsed
        .entries
        .iter()
        .filter_map(|(line, e)| Some((*line, e.key.never_matches()?.to_string())))
        .collect()
}

/// With `OVERLIMIT_REDIS`: the address or the server at fault, if listing
/// the counters fails as the plug-in's first request would.
fn unreachable_server(dir: &Path, url: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + crate::time::READ_LOCK_WAIT;
    match crate::backend::Store::open(dir, Some(url)).and_then(|mut s| s.files(deadline)) {
        Ok(_) => Vec::new(),
        Err(e) => vec![format!("overlimit: {e}")],
    }
}

/// Counters the counter directory's owner (who runs the plug-in) cannot
/// write: left by root running the plug-in by hand, say. Such a client
/// passes uncounted until the sweep removes the file. Group write counts when
/// the file has the directory's group, which the install gives that user; a
/// directory owned by root is root's plug-in's, which writes anything.
pub fn unwritable_counters(dir: &Path) -> Vec<String> {
    let Ok(d) = std::fs::metadata(dir) else {
        return Vec::new();
    };
    let Ok(files) = crate::sweep::counter_files(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut more = 0;
    for name in files {
        let path = dir.join(&name);
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = m.mode();
        let writable = d.uid() == 0
            || (m.uid() == d.uid() && mode & 0o200 != 0)
            || (m.gid() == d.gid() && mode & 0o020 != 0)
            || mode & 0o002 != 0;
        if m.is_file() && !writable {
            if out.len() < MAX_LISTED {
                out.push(format!(
                    "{}: error: owner {}, group {}, mode {:04o}: the plug-in (uid {}) cannot write it, \
                     so this client passes uncounted; chown {}:{} it (or `overlimit reset` the client)",
                    path.display(),
                    m.uid(),
                    m.gid(),
                    mode & 0o7777,
                    d.uid(),
                    d.uid(),
                    d.gid()
                ));
            } else {
                more += 1;
            }
        }
    }
    if more > 0 {
        out.push(format!(
            "{}: error: {more} more counters the plug-in cannot write",
            dir.display()
        ));
    }
    out
}

/// Overridden lines, masked ranges and shadowed ranges, in line order.
pub fn warnings(parsed: &Parsed) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut last: BTreeMap<&Key, usize> = BTreeMap::new();
    for (line, e) in &parsed.entries {
        if let Some(earlier) = last.insert(&e.key, *line) {
            out.push((earlier, format!("overridden by line {line}")));
        }
        if e.masked {
            let shown = String::from_utf8_lossy(&e.key.to_bytes()).into_owned();
            out.push((*line, format!("range has host bits set; read as {shown}")));
        }
    }
    let ranges: BTreeSet<Net> = last
        .keys()
        .filter_map(|k| match k {
            Key::Range(n) => Some(*n),
            _ => None,
        })
        .collect();
    let hosts: BTreeSet<IpAddr> = last
        .keys()
        .filter_map(|k| match k {
            Key::Client(c) => crate::client::parse_ip(c),
            _ => None,
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
    let db = Compiled::open_any(control).ok()??;
    let path = db.path().display().to_string();
    match db.standing(control, &parsed.meta) {
        Ok(Standing::Current) => None,
        Ok(Standing::SameBytes) => Some(format!(
            "{path}: warning: the text's owner or mode changed after compiling, so each \
             lookup compares its bytes; run `overlimit compile`"
        )),
        Ok(Standing::Stale) => Some(format!(
            "{path}: warning: stale, the plug-in reads the text; run `overlimit compile`"
        )),
        Err(e) => Some(format!("{path}: warning: {e}")),
    }
}

//! Which limits apply to a client: from the compiled cdb when it is current,
//! else by one streaming pass over the text that keeps only the lines that
//! concern the counters asked about, so memory stays flat for one client and
//! grows with the counters, not the lines, for many (`status`, the sweep).
//! Each line is read by `control::classify`; the answer comes from
//! `rules::resolve_in`, the same probes the cdb answers.

use crate::bytes::find;
use crate::client::Net;
use crate::client::{parse_ip, printable, Client};
use crate::compiled::{self, Compiled};
use crate::control::{classify, cleaned, split, write_key, Kind};
use crate::counted::Counted;
use crate::error::{fail, Internal};
use crate::limits::Limits;
use crate::rules::{self, Lines};
pub use crate::rules::{Resolved, Rule, Via};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Longer lines are reported as bad rather than held in memory.
pub const MAX_LINE: usize = 16 * 1024;

/// Bad lines logged per lookup at most: a control file of garbage must not
/// flood the log, nor fill memory with notes, on every recipient.
pub const MAX_NOTES: usize = 10;

/// Looks `client` up; `notes` collects lines for the log (bad lines, a
/// stale cdb). A missing control file is unlimited.
pub fn resolve(
    control: &Path,
    client: &Client,
    notes: &mut Vec<String>,
) -> Result<Resolved, Internal> {
    let source = open(control, &[Counted::Client(client.clone())], notes)?;
    rules::resolve_in(&source, client)
}

/// The lines that concern `wanted`: the cdb when it is current, else one
/// pass over the text. Ask `rules::resolve_in` or `rules::limits_in` then.
pub fn open(
    control: &Path,
    wanted: &[Counted],
    notes: &mut Vec<String>,
) -> Result<Source, Internal> {
    if let Some(db) = compiled::open(control, notes)? {
        return Ok(Source::Compiled(db));
    }
    let Some(text) = open_text(control)? else {
        return Ok(Source::Text(Kept::default()));
    };
    let mut scan = Scan::new(wanted);
    for_each_line(text, |number, line| match line {
        Ok(line) => scan.line(number, line, notes),
        Err(TooLong) => scan.note(notes, || {
            format!("line {number}: longer than {MAX_LINE} bytes; skipped")
        }),
    })
    .map_err(|e| fail("read", control, e))?;
    if scan.unlogged > 0 {
        notes.push(format!(
            "{} more bad lines skipped; `overlimit check` lists them",
            scan.unlogged
        ));
    }
    Ok(Source::Text(scan.kept))
}

/// Where the lines of one lookup come from.
pub enum Source {
    Compiled(Compiled),
    Text(Kept),
}

impl Lines for Source {
    fn rule(&self, key: &[u8]) -> Result<Option<(usize, Limits)>, Internal> {
        match self {
            Source::Compiled(db) => db.rule(key),
            Source::Text(kept) => kept.rule(key),
        }
    }

    fn lengths(&self, v6: bool, aggregate: bool) -> Result<Vec<u8>, Internal> {
        match self {
            Source::Compiled(db) => db.lengths(v6, aggregate),
            Source::Text(kept) => kept.lengths(v6, aggregate),
        }
    }
}

/// The last good line of each key that concerns the counters asked about.
#[derive(Default)]
pub struct Kept {
    rules: HashMap<Vec<u8>, (usize, Limits)>,
    /// Prefix lengths kept: index `2 * v6 + aggregate`.
    lengths: [Vec<u8>; 4],
}

impl Lines for Kept {
    fn rule(&self, key: &[u8]) -> Result<Option<(usize, Limits)>, Internal> {
        Ok(self.rules.get(key).cloned())
    }

    fn lengths(&self, v6: bool, aggregate: bool) -> Result<Vec<u8>, Internal> {
        Ok(self.lengths[2 * usize::from(v6) + usize::from(aggregate)].clone())
    }
}

/// Opens the text without hanging on a FIFO and refuses anything but a file;
/// `Ok(None)` when it does not exist.
pub fn open_text(control: &Path) -> Result<Option<Text>, Internal> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(control)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail("open", control, e)),
    };
    let m = file.metadata().map_err(|e| fail("fstat", control, e))?;
    if !m.is_file() {
        return Err(Internal::NotPlain {
            path: control.to_path_buf(),
            why: "not a regular file".into(),
        });
    }
    Ok(Some(Text {
        file,
        size: m.len(),
    }))
}

/// An open control file and its size when opened.
pub struct Text {
    pub file: File,
    pub size: u64,
}

/// A line over `MAX_LINE` bytes.
pub struct TooLong;

/// Calls `f` with each line's number and bytes (without its newline), reading
/// in 64 KiB blocks so that memory stays flat for any file. A line is handed
/// over where it lies in the block; only one that spans two blocks is
/// copied, since the plug-in's scan reads every line of the file.
pub fn for_each_line<F>(text: Text, mut f: F) -> io::Result<()>
where
    F: FnMut(usize, Result<&[u8], TooLong>),
{
    // No bigger than the file: a 10-line file then costs the plug-in no
    // fresh heap page (measured: one page fault a call, about 1%).
    let block = text.size.saturating_add(1).min(64 * 1024) as usize;
    let mut r = BufReader::with_capacity(block, text.file);
    // The start of a line the last block ended in, and whether it is
    // already too long to keep.
    let mut line = Vec::new();
    let mut too_long = false;
    let mut number = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            if !line.is_empty() || too_long {
                number += 1;
                f(number, if too_long { Err(TooLong) } else { Ok(&line) });
            }
            return Ok(());
        }
        let mut rest = buf;
        while let Some(i) = find(b'\n', rest) {
            let part = &rest[..i];
            rest = &rest[i + 1..];
            number += 1;
            if too_long || line.len() + part.len() > MAX_LINE {
                f(number, Err(TooLong));
            } else if line.is_empty() {
                f(number, Ok(part));
            } else {
                line.extend_from_slice(part);
                f(number, Ok(&line));
            }
            line.clear();
            too_long = false;
        }
        if line.len() + rest.len() > MAX_LINE {
            too_long = true;
        } else if !too_long {
            line.extend_from_slice(rest);
        }
        let used = buf.len();
        r.consume(used);
    }
}

/// One pass's state: what is wanted, and what was kept.
struct Scan {
    atchars: Vec<u8>,
    /// The keys (`Key::to_bytes`) that concern a wanted counter.
    keys: HashSet<Vec<u8>>,
    /// `by_length[n]`: the wanted keys `n` bytes long. Most lines' canonical
    /// keys are as long as written, so a line whose length no wanted key has
    /// is passed over without building its key.
    by_length: Vec<Vec<Vec<u8>>>,
    /// The wanted addresses, sorted, for the ranges that hold them.
    v4: Vec<u32>,
    v6: Vec<u128>,
    kept: Kept,
    /// Where a line with white space is cleaned into.
    line: Vec<u8>,
    /// The current line's canonical key, once known.
    key: Vec<u8>,
    /// Whether a wanted key holds a `/`, as every range's key does.
    slashed: bool,
    /// Bad lines seen, and those of them past `MAX_NOTES`, not logged.
    bad: usize,
    unlogged: usize,
}

impl Scan {
    fn new(wanted: &[Counted]) -> Scan {
        let mut keys = HashSet::from([Vec::new()]);
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for counted in wanted {
            match counted {
                Counted::Client(c @ Client::User(name)) => {
                    keys.insert(name.clone());
                    if let Some(d) = c.domain() {
                        keys.insert([b"*@", d].concat());
                        keys.insert([b"@", d].concat());
                    }
                }
                Counted::Client(Client::Ip(ip)) => {
                    keys.insert(ip.to_string().into_bytes());
                    match ip {
                        IpAddr::V4(a) => v4.push(u32::from(*a)),
                        IpAddr::V6(a) => v6.push(u128::from(*a)),
                    }
                }
                Counted::Domain(_) | Counted::Range(_) => {
                    keys.insert(counted.label());
                }
            }
        }
        v4.sort_unstable();
        v6.sort_unstable();
        let mut by_length = vec![Vec::new(); keys.iter().map(Vec::len).max().unwrap_or(0) + 1];
        for k in &keys {
            by_length[k.len()].push(k.clone());
        }
        Scan {
            slashed: keys.iter().any(|k| k.contains(&b'/')),
            atchars: crate::client::atchars(),
            keys,
            by_length,
            v4,
            v6,
            kept: Kept::default(),
            line: Vec::new(),
            key: Vec::new(),
            bad: 0,
            unlogged: 0,
        }
    }

    /// Notes a bad line, unless `MAX_NOTES` have been already.
    fn note(&mut self, notes: &mut Vec<String>, text: impl FnOnce() -> String) {
        self.bad += 1;
        if self.bad <= MAX_NOTES {
            notes.push(text());
        } else {
            self.unlogged += 1;
        }
    }

    fn line(&mut self, number: usize, raw: &[u8], notes: &mut Vec<String>) {
        let mut spare = std::mem::take(&mut self.line);
        let line = cleaned(raw, &mut spare);
        if !line.is_empty() {
            self.keep(number, line, notes);
        }
        self.line = spare;
    }

    fn keep(&mut self, number: usize, line: &[u8], notes: &mut Vec<String>) {
        let (kind, limits) = match split(line).and_then(|(k, l)| Ok((classify(k)?, l))) {
            Ok(parts) => parts,
            Err(e) => return self.note(notes, || format!("line {number}: {e}; skipped")),
        };
        if !self.wanted(kind) {
            return;
        }
        let range = match kind {
            Kind::Range { net, .. } => Some((net, false)),
            Kind::RangeAggregate { net, .. } => Some((net, true)),
            _ => None,
        };
        match Limits::parse(limits) {
            Ok(limits) => {
                if let Some((net, aggregate)) = range {
                    let lens = &mut self.kept.lengths
                        [2 * usize::from(net.addr.is_ipv6()) + usize::from(aggregate)];
                    if !lens.contains(&net.len) {
                        lens.push(net.len);
                    }
                }
                self.kept.rules.insert(self.key.clone(), (number, limits));
            }
            Err(e) => {
                let shown = printable(&self.key);
                self.note(notes, || format!("line {number} ({shown}): {e}; skipped"));
            }
        }
    }

    /// Whether a classified line concerns a wanted counter, leaving its
    /// canonical key (`write_key`'s bytes) in `self.key` when it does. The
    /// truth is "its key is a wanted key, or it is a range holding a wanted
    /// address"; the plug-in asks it of every line, so each kind is first
    /// put to the cheapest test that can only reject lines the truth would
    /// reject: no key is built unless a wanted key is as long as the line's
    /// would be, no address line is parsed unless addresses are wanted, and
    /// no range is written out unless it is kept. (A range is still parsed
    /// by `classify`, on every line, so that a bad one is noted whoever the
    /// client is.)
    fn wanted(&mut self, kind: Kind<'_>) -> bool {
        let addresses = !(self.v4.is_empty() && self.v6.is_empty());
        match kind {
            Kind::Range { net, .. } | Kind::RangeAggregate { net, .. } => {
                // A range's key holds a `/`, so only a wanted key with one
                // (a range's counter, a login read with `/` as itself) can
                // be it.
                let holds = self.holds(net);
                (holds || self.slashed) && {
                    let listed = self.build(kind);
                    holds || listed
                }
            }
            // Dotted decimal is its own canonical key, as an address (the
            // parser takes no leading zeros) and as a login alike.
            Kind::Client(c) if is_dotted(c) => {
                self.has_length(c.len()) && {
                    self.key.clear();
                    self.key.extend_from_slice(c);
                    self.is_listed()
                }
            }
            // An address is written in many ways: parsed, it is wanted as
            // one of the wanted addresses, and only then written out.
            Kind::Client(c) if addresses && is_address_like(c) => match parse_ip(c) {
                Some(ip) => self.wants_address(ip) && self.build(kind),
                None => self.has_length(c.len()) && self.build(kind),
            },
            // Logins and domains keep their length in canonical form. So do
            // address spellings when no address is wanted, unless they parse
            // as one: then no wanted key is theirs at any length, since a
            // user's name never parses as an address (`Client::from_login`).
            Kind::Default | Kind::Client(_) | Kind::DomainUsers(_) | Kind::Domain(_) => {
                self.has_length(written_length(kind)) && self.build(kind)
            }
        }
    }

    /// Whether some wanted key is `len` bytes long.
    fn has_length(&self, len: usize) -> bool {
        self.by_length.get(len).is_some_and(|keys| !keys.is_empty())
    }

    /// Writes the line's canonical key and says whether it is wanted.
    fn build(&mut self, kind: Kind<'_>) -> bool {
        write_key(kind, &self.atchars, &mut self.key);
        self.is_listed()
    }

    /// Whether the key buffer holds a wanted key: compared in place with
    /// the few wanted keys of its length (the plug-in's case), hashed only
    /// where there are many (`status`).
    fn is_listed(&self) -> bool {
        const FEW: usize = 4;
        match self.by_length.get(self.key.len()) {
            None => false,
            Some(keys) if keys.len() <= FEW => keys.contains(&self.key),
            Some(_) => self.keys.contains(&self.key),
        }
    }

    /// Whether `ip` (canonical, as `parse_ip` gives it) is a wanted address.
    fn wants_address(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.binary_search(&u32::from(a)).is_ok(),
            IpAddr::V6(a) => self.v6.binary_search(&u128::from(a)).is_ok(),
        }
    }

    /// Whether `net` holds a wanted address: one binary search.
    fn holds(&self, net: Net) -> bool {
        fn any<T: Ord + Copy>(sorted: &[T], low: T, high: T) -> bool {
            let i = sorted.partition_point(|&a| a < low);
            sorted.get(i).is_some_and(|&a| a <= high)
        }
        match net.addr {
            IpAddr::V4(a) => {
                let low = u32::from(a);
                let host = u32::MAX.checked_shr(u32::from(net.len)).unwrap_or(0);
                any(&self.v4, low, low | host)
            }
            IpAddr::V6(a) => {
                let low = u128::from(a);
                let host = u128::MAX.checked_shr(u32::from(net.len)).unwrap_or(0);
                any(&self.v6, low, low | host)
            }
        }
    }
}

/// Digits and dots only: a key that is the same in canonical form.
fn is_dotted(key: &[u8]) -> bool {
    key.iter().all(|b| b.is_ascii_digit() || *b == b'.')
}

/// Written with the bytes of an address only, which `parse_ip` may take.
fn is_address_like(key: &[u8]) -> bool {
    key.iter()
        .all(|b| b.is_ascii_hexdigit() || b".:".contains(b))
}

/// How long the canonical key of a login, a domain or the default is: as
/// long as written (`login_into` and lower-casing keep the length), its
/// prefix included.
fn written_length(kind: Kind<'_>) -> usize {
    match kind {
        Kind::Client(c) => c.len(),
        Kind::DomainUsers(d) => d.len() + 2,
        Kind::Domain(d) => d.len() + 1,
        Kind::Default | Kind::Range { .. } | Kind::RangeAggregate { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines handed over in place and lines that span two blocks, too long
    /// ones among them, read as splitting the whole file at its newlines.
    #[test]
    fn lines_across_blocks_read_as_the_file_split_at_newlines() {
        let path = std::env::temp_dir().join(format!("overlimit-lines-{}", std::process::id()));
        let lengths = [
            0,
            1,
            25,
            MAX_LINE,
            MAX_LINE + 1,
            70_000,
            3,
            64 * 1024 - 30,
            40,
        ];
        let mut seed = 7u32;
        for ends_in_newline in [true, false] {
            let mut text = Vec::new();
            for round in 0..40 {
                let len = lengths[(round * 5 + seed as usize) % lengths.len()];
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                text.extend((0..len).map(|i| b'a' + ((i + round) % 26) as u8));
                text.push(b'\n');
            }
            if !ends_in_newline {
                text.extend_from_slice(b"last");
            }
            std::fs::write(&path, &text).unwrap();
            let mut read = Vec::new();
            let done = for_each_line(open_text(&path).unwrap().unwrap(), |n, line| {
                read.push((n, line.map(<[u8]>::to_vec).map_err(|TooLong| ())));
            });
            std::fs::remove_file(&path).unwrap();
            done.unwrap();
            let mut parts: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            if ends_in_newline {
                parts.pop();
            }
            let want: Vec<_> = (1..)
                .zip(parts)
                .map(|(n, p)| {
                    (
                        n,
                        if p.len() > MAX_LINE {
                            Err(())
                        } else {
                            Ok(p.to_vec())
                        },
                    )
                })
                .collect();
            assert_eq!(read.len(), want.len());
            assert!(read == want, "lines differ");
        }
    }
}

//! The layout of `relaylimits.cdb`, shared by `overlimit compile` (which
//! writes it) and every reader of the control file.
//!
//! Keys are the canonical left-hand sides (`Key::to_bytes`: `user@x`, `*@x`,
//! `@x`, `` for the default, `192.0.2.0/24`, `@192.0.2.0/24`); values are
//! `LINE LIMITS`. Keys starting with a newline, which no line can hold, hold
//! the text's fingerprint, a digest of what was compiled, and the prefix
//! lengths that ranges use, so a longest-prefix match costs one probe per
//! length present rather than one per possible length.

use crate::cdb;
use crate::control::{Entry, Key};
use crate::error::{fail, Internal};
use crate::limits::Limits;
use crate::rules::Lines;
use std::collections::BTreeMap;
use std::fs::{Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const SOURCE: &[u8] = b"\nsource";
/// A hash of the records, which `overlimit check` compares with the text.
pub const DIGEST: &[u8] = b"\ndigest";
/// Prefix lengths: index `2 * v6 + aggregate`.
const LENGTHS: [&[u8]; 4] = [b"\nranges4", b"\naggregates4", b"\nranges6", b"\naggregates6"];

/// `RELAYLIMITS.cdb`.
pub fn cdb_path(control: &Path) -> PathBuf {
    let mut p = control.as_os_str().to_owned();
    p.push(".cdb");
    PathBuf::from(p)
}

/// What identifies one version of the text: device, inode, size and mtime
/// to the nanosecond. Every write sets the mtime and an editor's save makes
/// a new inode; what only the owner can do on purpose (set the mtime back
/// with `touch -r`) `overlimit check` catches by the digest. The ctime is
/// left out: a `chmod` or `chown` changes it, and must not make the cdb
/// stale (the text then read on every call).
pub fn fingerprint(m: &Metadata) -> Vec<u8> {
    format!(
        "v2 {} {} {} {}.{:09}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    )
    .into_bytes()
}

/// The key-value records of the parsed lines (last line wins), without the
/// fingerprint, sorted.
fn entries_of(entries: &[(usize, Entry)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut last: BTreeMap<Vec<u8>, (usize, &Limits)> = BTreeMap::new();
    let mut lengths: [Vec<u8>; 4] = Default::default();
    for (line, e) in entries {
        let net = match &e.key {
            Key::Range(n) => Some((n, 0)),
            Key::RangeAggregate(n) => Some((n, 1)),
            _ => None,
        };
        if let Some((net, aggregate)) = net {
            lengths[2 * usize::from(net.addr.is_ipv6()) + aggregate].push(net.len);
        }
        last.insert(e.key.to_bytes(), (*line, &e.limits));
    }
    let mut out = Vec::new();
    for (key, mut lens) in LENGTHS.into_iter().zip(lengths) {
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        let list: Vec<String> = lens.iter().map(u8::to_string).collect();
        out.push((key.to_vec(), list.join(" ").into_bytes()));
    }
    out.extend(
        last.into_iter()
            .map(|(k, (line, limits))| (k, format!("{line} {limits}").into_bytes())),
    );
    out
}

/// A digest of records: two 64-bit FNV-1a hashes over their lengths and
/// bytes. Not a defence against a forger (the text's owner could write
/// anything anyway), only against a cdb that silently no longer says what
/// the text says.
pub fn digest_of(entries: &[(usize, Entry)]) -> Vec<u8> {
    let (mut a, mut b) = (0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142u64);
    for (k, v) in entries_of(entries) {
        for part in [&(k.len() as u64).to_le_bytes()[..], &k, &v, b"\n"] {
            for &byte in part {
                a = (a ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
                b = (b ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    format!("{a:016x}{b:016x}").into_bytes()
}

/// The cdb's records for the parsed lines of a text.
pub fn records(text: &Metadata, entries: &[(usize, Entry)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = vec![
        (SOURCE.to_vec(), fingerprint(text)),
        (DIGEST.to_vec(), digest_of(entries)),
    ];
    out.extend(entries_of(entries));
    out
}

/// A cdb that matches its text.
pub struct Compiled {
    db: cdb::Reader,
    path: PathBuf,
}

/// Opens the cdb if there is one that matches the text; `Ok(None)` sends
/// the caller to the text (with a note when a cdb is there but stale).
pub fn open(control: &Path, notes: &mut Vec<String>) -> Result<Option<Compiled>, Internal> {
    let path = cdb_path(control);
    // Non-blocking, so that a FIFO in its place cannot hang the plug-in.
    let db = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => cdb::Reader::new(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail("open", &path, e)),
    };
    // The text is looked at only now: most servers have no cdb at all.
    let text = match std::fs::metadata(control) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail("stat", control, e)),
    };
    let stamp = db.get(SOURCE).map_err(|e| fail("read", &path, e))?;
    let current = match (stamp, &text) {
        (Some(stamp), Some(m)) => stamp == fingerprint(m),
        _ => false,
    };
    if !current {
        notes.push(format!(
            "{} is stale (the text changed after `overlimit compile`); reading the text",
            path.display()
        ));
        return Ok(None);
    }
    Ok(Some(Compiled { db, path }))
}

impl Compiled {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Internal> {
        self.db.get(key).map_err(|e| fail("read", &self.path, e))
    }
}

impl Lines for Compiled {
    fn rule(&self, key: &[u8]) -> Result<Option<(usize, Limits)>, Internal> {
        let Some(v) = self.get(key)? else {
            return Ok(None);
        };
        value(&v)
            .map(Some)
            .ok_or_else(|| Internal(format!("{}: damaged record", self.path.display())))
    }

    fn lengths(&self, v6: bool, aggregate: bool) -> Result<Vec<u8>, Internal> {
        let key = LENGTHS[2 * usize::from(v6) + usize::from(aggregate)];
        let list = self.get(key)?.unwrap_or_default();
        Ok(list
            .split(|&b| b == b' ')
            .filter_map(crate::limits::parse_number)
            .filter_map(|n| u8::try_from(n).ok())
            .collect())
    }
}

fn value(v: &[u8]) -> Option<(usize, Limits)> {
    let space = v.iter().position(|&b| b == b' ')?;
    let line = usize::try_from(crate::limits::parse_number(&v[..space])?).ok()?;
    Some((line, Limits::parse(&v[space + 1..]).ok()?))
}

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
/// The text's ctime when compiled.
const CTIME: &[u8] = b"\nctime";
/// A digest of the text's bytes.
const DIGEST: &[u8] = b"\ndigest";
/// Prefix lengths: index `2 * v6 + aggregate`.
const LENGTHS: [&[u8]; 4] = [
    b"\nranges4",
    b"\naggregates4",
    b"\nranges6",
    b"\naggregates6",
];

/// `RELAYLIMITS.cdb`.
pub fn cdb_path(control: &Path) -> PathBuf {
    let mut p = control.as_os_str().to_owned();
    p.push(".cdb");
    PathBuf::from(p)
}

/// What identifies one version of the text: device, inode, size and mtime
/// to the nanosecond. Every write sets the mtime, an editor's save makes a
/// new inode. Only a deliberate `touch -r` or `cp -p` puts an mtime back,
/// and then the ctime tells; but so does a `chmod` or `chown`, which must not
/// make the cdb stale (the text then read on every call). So the ctime is
/// kept apart: when only it changed, the text's bytes are compared with the
/// digest recorded at compile time, a fast hash and no parse.
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

fn ctime(m: &Metadata) -> Vec<u8> {
    format!("{}.{:09}", m.ctime(), m.ctime_nsec()).into_bytes()
}

/// A digest of the text: two 64-bit lanes over its 8-byte words. Not a
/// defence against a forger (the text's owner can write anything anyway),
/// only against a cdb that silently no longer says what the text says.
pub fn digest(mut text: impl io::Read) -> io::Result<Vec<u8>> {
    let (mut a, mut b, mut len) = (0x243f_6a88_85a3_08d3u64, 0x1319_8a2e_0370_7344u64, 0u64);
    let mut buf = vec![0u8; 64 * 1024];
    let mut held = 0;
    loop {
        let n = text.read(&mut buf[held..])?;
        let end = held + n;
        let words = if n == 0 {
            end.div_ceil(8) * 8
        } else {
            end / 8 * 8
        };
        buf[end..words.max(end)].fill(0);
        for w in buf[..words].chunks_exact(8) {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            a = (a ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
            b = (b ^ w).wrapping_mul(0xc2b2_ae3d_27d4_eb4f).rotate_left(29);
        }
        len += n as u64;
        if n == 0 {
            return Ok(format!("{:016x}{:016x}", a ^ len, b.wrapping_add(len)).into_bytes());
        }
        buf.copy_within(words..end, 0);
        held = end - words;
    }
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

/// The cdb's records for the parsed lines of a text whose bytes have
/// `digest`.
pub fn records(
    text: &Metadata,
    digest: Vec<u8>,
    entries: &[(usize, Entry)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = vec![
        (SOURCE.to_vec(), fingerprint(text)),
        (CTIME.to_vec(), ctime(text)),
        (DIGEST.to_vec(), digest),
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
    let Some(compiled) = Compiled::open_any(control)? else {
        return Ok(None);
    };
    // The text is looked at only now: most servers have no cdb at all.
    let text = match std::fs::metadata(control) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail("stat", control, e)),
    };
    if let Some(m) = &text {
        if compiled.standing(control, m)? != Standing::Stale {
            return Ok(Some(compiled));
        }
    }
    notes.push(format!(
        "{} is stale (the text changed after `overlimit compile`); reading the text",
        compiled.path.display()
    ));
    Ok(None)
}

/// How a cdb stands to its text.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// Compiled from this very file, untouched since.
    Current,
    /// The same bytes, but the file's attributes changed (`chmod`): each
    /// lookup compares the bytes; `overlimit compile` makes that unneeded.
    SameBytes,
    Stale,
}

impl Compiled {
    /// Opens the cdb beside `control`, current or not (`overlimit check`
    /// asks `standing`); `None` if there is none. Non-blocking, so that a
    /// FIFO in its place cannot hang the plug-in.
    pub fn open_any(control: &Path) -> Result<Option<Compiled>, Internal> {
        let path = cdb_path(control);
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => Ok(Some(Compiled {
                db: cdb::Reader::new(f),
                path,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail("open", &path, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this cdb still says what the text at `control` says.
    pub fn standing(&self, control: &Path, text: &Metadata) -> Result<Standing, Internal> {
        if self.get(SOURCE)? != Some(fingerprint(text)) {
            return Ok(Standing::Stale);
        }
        if self.get(CTIME)? == Some(ctime(text)) {
            return Ok(Standing::Current);
        }
        if !text.is_file() {
            return Ok(Standing::Stale);
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(control)
            .map_err(|e| fail("open", control, e))?;
        let now = digest(file).map_err(|e| fail("read", control, e))?;
        Ok(if self.get(DIGEST)? == Some(now) {
            Standing::SameBytes
        } else {
            Standing::Stale
        })
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Internal> {
        self.db.get(key).map_err(|e| fail("read", &self.path, e))
    }
}

impl Lines for Compiled {
    fn rule(&self, key: &[u8]) -> Result<Option<(usize, Limits)>, Internal> {
        let Some(v) = self.get(key)? else {
            return Ok(None);
        };
        value(&v).map(Some).ok_or_else(|| Internal::Damaged {
            path: self.path.clone(),
            why: "damaged record",
        })
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

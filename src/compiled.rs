//! The layout of `relaylimits.cdb`, shared by `overlimit compile` (which
//! writes it) and the plug-in (which reads it).
//!
//! Keys are the canonical left-hand sides (`user@x`, `*@x`, `@x`, `` for the
//! default, `192.0.2.0/24`); values are `LINE LIMITS`. Three keys starting with
//! a newline, which no line can hold, hold the text's fingerprint and the
//! prefix lengths that ranges use, so a longest-prefix match costs one probe
//! per length present rather than one per possible length.

use crate::cdb;
use crate::client::Client;
use crate::control::{Entry, Key, Net};
use crate::error::{fail, Internal};
use crate::limits::Limits;
use crate::lookup::{Resolved, Rule, Via};
use std::collections::BTreeMap;
use std::fs::{Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const SOURCE: &[u8] = b"\nsource";
const RANGES4: &[u8] = b"\nranges4";
const RANGES6: &[u8] = b"\nranges6";

/// `RELAYLIMITS.cdb`.
pub fn cdb_path(control: &Path) -> PathBuf {
    let mut p = control.as_os_str().to_owned();
    p.push(".cdb");
    PathBuf::from(p)
}

/// What identifies one version of the text: device, inode, size, and mtime
/// and ctime to the nanosecond. An editor's save changes at least one of
/// them; the ctime catches an edit that keeps size and mtime (`cp -p` over
/// the file, `touch -r`), as no one can set it back.
pub fn fingerprint(m: &Metadata) -> Vec<u8> {
    format!(
        "{} {} {} {}.{:09} {}.{:09}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
    .into_bytes()
}

/// The cdb's records for the parsed lines of a text (last line wins).
pub fn records(text: &Metadata, entries: &[(usize, Entry)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut last: BTreeMap<Vec<u8>, (usize, &Limits)> = BTreeMap::new();
    let mut lengths: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (line, e) in entries {
        if let Key::Range(net) = &e.key {
            lengths[usize::from(net.addr.is_ipv6())].push(net.len);
        }
        last.insert(e.key.to_bytes(), (*line, &e.limits));
    }
    let mut out = vec![(SOURCE.to_vec(), fingerprint(text))];
    for (key, mut lens) in [RANGES4, RANGES6].into_iter().zip(lengths) {
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

/// Looks the client up in the cdb if there is one that matches the text;
/// `Ok(None)` sends the caller to the text.
pub fn resolve(
    control: &Path,
    client: &Client,
    notes: &mut Vec<String>,
) -> Result<Option<Resolved>, Internal> {
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
    let get = |key: &[u8]| db.get(key).map_err(|e| fail("read", &path, e));
    // The text is looked at only now: most servers have no cdb at all.
    let text = match std::fs::metadata(control) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail("stat", control, e)),
    };
    let current = match (get(SOURCE)?, &text) {
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
    let rule = |key: &[u8], via: Via| -> Result<Option<Rule>, Internal> {
        Ok(match get(key)? {
            Some(v) => Some(
                value(&v, via)
                    .ok_or_else(|| Internal(format!("{}: damaged record", path.display())))?,
            ),
            None => None,
        })
    };
    let name = client.name();
    let mut own = rule(&name, Via::Own)?;
    let mut domain = None;
    match client {
        Client::User(_) => {
            if let Some(d) = client.domain() {
                if own.is_none() {
                    own = rule(&[b"*@", d].concat(), Via::DomainUsers)?;
                }
                domain = rule(&[b"@", d].concat(), Via::Own)?;
            }
        }
        Client::Ip(ip) => {
            if own.is_none() {
                let lengths =
                    get(if ip.is_ipv4() { RANGES4 } else { RANGES6 })?.unwrap_or_default();
                for len in lengths
                    .split(|&b| b == b' ')
                    .filter_map(crate::limits::parse_number)
                {
                    let net = Net::new(*ip, len as u8);
                    if let Some(r) = rule(net.to_string().as_bytes(), Via::Range(net))? {
                        own = Some(r);
                        break;
                    }
                }
            }
        }
    }
    if own.is_none() {
        own = rule(b"", Via::Default)?;
    }
    Ok(Some(Resolved { own, domain }))
}

fn value(v: &[u8], via: Via) -> Option<Rule> {
    let space = v.iter().position(|&b| b == b' ')?;
    Some(Rule {
        line: crate::limits::parse_number(&v[..space])? as usize,
        limits: Limits::parse(&v[space + 1..]).ok()?,
        via,
    })
}

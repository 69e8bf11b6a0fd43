//! Which limits apply to a client: from the compiled cdb when it is current,
//! else by one streaming pass over the text, in constant memory whatever its
//! size.
//!
//! Precedence for the client's own limits: its own line; else `*@domain` (for
//! users) or the longest matching range (for addresses); else the default line;
//! else unlimited. A user's `@domain` line adds a shared domain counter.

use crate::bytes::find;
use crate::client::{parse_ip, printable, Client};
use crate::compiled;
use crate::control::{clean, split, Net};
use crate::error::{fail, Internal};
use crate::limits::Limits;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Longer lines are reported as bad rather than held in memory.
pub const MAX_LINE: usize = 16 * 1024;

/// Bad lines logged per lookup at most: a control file of garbage must not
/// flood the log, nor fill memory with notes, on every recipient.
pub const MAX_NOTES: usize = 10;

/// The line that gave a client its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub limits: Limits,
    /// Line number in the text (1-based).
    pub line: usize,
    pub via: Via,
}

/// How a rule was found, for logs and `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    Own,
    DomainUsers,
    Range(Net),
    Default,
}

/// Everything that applies to one client. `own == None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub own: Option<Rule>,
    pub domain: Option<Rule>,
}

/// Looks `client` up; `notes` collects lines for the log (bad lines that
/// concern this client, a stale cdb). A missing control file is unlimited.
pub fn resolve(
    control: &Path,
    client: &Client,
    notes: &mut Vec<String>,
) -> Result<Resolved, Internal> {
    if let Some(found) = compiled::resolve(control, client, notes)? {
        return Ok(found);
    }
    let Some(file) = open_text(control)? else {
        return Ok(Resolved::default());
    };
    let mut scan = Scan::new(client);
    for_each_line(file, |number, line| match line {
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
    Ok(scan.finish())
}

/// Opens the text without hanging on a FIFO and refuses anything but a file;
/// `Ok(None)` when it does not exist.
pub fn open_text(control: &Path) -> Result<Option<File>, Internal> {
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
        return Err(Internal(format!(
            "{}: not a regular file",
            control.display()
        )));
    }
    Ok(Some(file))
}

/// A line over `MAX_LINE` bytes.
pub struct TooLong;

/// Calls `f` with each line's number and bytes (without its newline), reading
/// in 64 KiB blocks so that memory stays flat for any file.
pub fn for_each_line<F>(file: File, mut f: F) -> io::Result<()>
where
    F: FnMut(usize, Result<&[u8], TooLong>),
{
    let mut r = BufReader::with_capacity(64 * 1024, file);
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
        let (part, used, ends) = match find(b'\n', buf) {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        if line.len() + part.len() > MAX_LINE {
            too_long = true;
        } else if !too_long {
            line.extend_from_slice(part);
        }
        r.consume(used);
        if ends {
            number += 1;
            f(number, if too_long { Err(TooLong) } else { Ok(&line) });
            line.clear();
            too_long = false;
        }
    }
}

/// One pass's state: the last matching line of each kind.
struct Scan<'a> {
    client: &'a Client,
    name: Vec<u8>,
    buf: Vec<u8>,
    own: Option<Rule>,
    users: Option<Rule>,
    domain: Option<Rule>,
    default: Option<Rule>,
    range: Option<Rule>,
    /// Bad lines seen, and those of them past `MAX_NOTES`, not logged.
    bad: usize,
    unlogged: usize,
}

/// What a line's key is to the client being looked up.
enum Slot {
    Own,
    DomainUsers,
    Domain,
    Range(Net),
    Default,
}

impl<'a> Scan<'a> {
    fn new(client: &'a Client) -> Scan<'a> {
        Scan {
            client,
            name: client.name(),
            buf: Vec::new(),
            own: None,
            users: None,
            domain: None,
            default: None,
            range: None,
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
        let mut buf = std::mem::take(&mut self.buf);
        if clean(raw, &mut buf) {
            match split(&buf) {
                Err(e) => self.note(notes, || format!("line {number}: {e}; skipped")),
                Ok((key, limits)) => {
                    if let Some(slot) = self.slot(number, key, notes) {
                        match Limits::parse(limits) {
                            Ok(limits) => self.keep(slot, number, limits),
                            Err(e) => self.note(notes, || {
                                format!("line {number} ({}): {e}; skipped", printable(key))
                            }),
                        }
                    }
                }
            }
        }
        self.buf = buf;
    }

    /// Compares without allocating: most lines concern other clients.
    fn slot(&mut self, number: usize, key: &[u8], notes: &mut Vec<String>) -> Option<Slot> {
        if key.is_empty() {
            return Some(Slot::Default);
        }
        match self.client {
            Client::User(name) => {
                if key.eq_ignore_ascii_case(name) {
                    return Some(Slot::Own);
                }
                let domain = self.client.domain()?;
                if let Some(d) = key.strip_prefix(b"*@") {
                    return d.eq_ignore_ascii_case(domain).then_some(Slot::DomainUsers);
                }
                let d = key.strip_prefix(b"@")?;
                d.eq_ignore_ascii_case(domain).then_some(Slot::Domain)
            }
            Client::Ip(ip) => {
                if key.contains(&b'/') && !key.contains(&b'@') {
                    return match Net::parse(key) {
                        Some((net, _)) => net.contains(*ip).then_some(Slot::Range(net)),
                        None => {
                            self.note(notes, || {
                                format!("line {number}: bad range {:?}; skipped", printable(key))
                            });
                            None
                        }
                    };
                }
                // The text may write an address in any form; the name is canonical.
                if key.eq_ignore_ascii_case(&self.name) || parse_ip(key) == Some(*ip) {
                    return Some(Slot::Own);
                }
                None
            }
        }
    }

    fn keep(&mut self, slot: Slot, line: usize, limits: Limits) {
        let rule = |via| Some(Rule { limits, line, via });
        match slot {
            Slot::Own => self.own = rule(Via::Own),
            Slot::DomainUsers => self.users = rule(Via::DomainUsers),
            Slot::Domain => self.domain = rule(Via::Own),
            Slot::Default => self.default = rule(Via::Default),
            Slot::Range(net) => {
                // Longest prefix wins; of equal ones, the last line.
                let longer = match &self.range {
                    Some(Rule {
                        via: Via::Range(old),
                        ..
                    }) => net.len >= old.len,
                    _ => true,
                };
                if longer {
                    self.range = rule(Via::Range(net));
                }
            }
        }
    }

    fn finish(self) -> Resolved {
        Resolved {
            own: self.own.or(self.users).or(self.range).or(self.default),
            domain: self.domain,
        }
    }
}

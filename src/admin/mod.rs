//! The administrator's subcommands of `overlimit`, one file each with its
//! usage text and its `run`, and what they share: the exit codes, the
//! command-line reading, the whole-file parse.

pub mod block;
pub mod check;
pub mod compile;
pub mod history;
pub mod metrics;
pub mod migrate;
pub mod replay;
pub mod reset;
pub mod status;

use crate::control::{clean, Entry, LineError};
use crate::error::{fail, Internal};
use crate::lookup::{for_each_line, open_text, TooLong, MAX_LINE};
use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The exit codes of `overlimit` and `overlimit-sweep`, the one place they
/// are decided (see EXIT CODES in overlimit(8)).
pub mod exit {
    /// Done; for `check`, no line is bad or can never match.
    pub const OK: i32 = 0;
    /// `check` found problems (a missing control file among them);
    /// `compile` refused a text with bad lines.
    pub const PROBLEMS: i32 = 1;
    /// A usage error, or a file or directory that could not be read or
    /// written.
    pub const TROUBLE: i32 = 2;
}

/// The command line of one subcommand: its flags (each one of `known`) and
/// its names, as bytes. Names may hold any byte; `--` ends the flags, so a
/// name may start with `-`. An unknown flag is an error naming it.
pub struct Args {
    pub flags: Vec<&'static str>,
    pub names: Vec<Vec<u8>>,
}

impl Args {
    pub fn parse(args: &[OsString], known: &[&'static str]) -> Result<Args, String> {
        let mut parsed = Args {
            flags: Vec::new(),
            names: Vec::new(),
        };
        let mut flags_done = false;
        for arg in args {
            let bytes = arg.as_bytes();
            if flags_done || !bytes.starts_with(b"-") || bytes == b"-" {
                parsed.names.push(bytes.to_vec());
            } else if bytes == b"--" {
                flags_done = true;
            } else {
                match known.iter().find(|k| k.as_bytes() == bytes) {
                    Some(k) => parsed.flags.push(k),
                    None => return Err(format!("unknown flag {}", crate::client::shown(bytes))),
                }
            }
        }
        Ok(parsed)
    }

    pub fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }
}

/// The control file read in full: good lines, bad ones, and its metadata.
pub struct Parsed {
    pub meta: Metadata,
    pub entries: Vec<(usize, Entry)>,
    pub errors: Vec<(usize, String)>,
}

/// Reads the whole control file. `Ok(None)`: it does not exist.
pub fn parse_file(control: &Path) -> Result<Option<Parsed>, Internal> {
    let Some(text) = open_text(control)? else {
        return Ok(None);
    };
    let meta = text
        .file
        .metadata()
        .map_err(|e| fail("fstat", control, e))?;
    let mut parsed = Parsed {
        meta,
        entries: Vec::new(),
        errors: Vec::new(),
    };
    let atchars = crate::client::atchars();
    let mut buf = Vec::new();
    for_each_line(text, |number, line| match line {
        Err(TooLong) => parsed
            .errors
            .push((number, format!("longer than {MAX_LINE} bytes"))),
        Ok(line) => {
            if clean(line, &mut buf) {
                match Entry::parse_with(&buf, &atchars) {
                    Ok(e) => parsed.entries.push((number, e)),
                    Err(e) => parsed.errors.push((number, describe(&e, line))),
                }
            }
        }
    })
    .map_err(|e| fail("read", control, e))?;
    Ok(Some(parsed))
}

/// "1 entry", "2 entries".
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn describe(e: &LineError, line: &[u8]) -> String {
    let shown = crate::client::printable(&line[..line.len().min(80)]);
    format!("{e}: {shown}")
}

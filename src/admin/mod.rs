//! The administrator's subcommands of `overlimit`, one file each with its
//! `run`. Each returns the exit code: 0 success, 1 problems found by `check`
//! (or `compile`), 2 usage or I/O error.

pub mod check;
pub mod compile;
pub mod reset;
pub mod status;

use crate::control::{clean, Entry, LineError};
use crate::error::{fail, Internal};
use crate::lookup::{for_each_line, open_text, TooLong, MAX_LINE};
use std::fs::Metadata;
use std::path::Path;

/// The control file read in full: good lines, bad ones, and its metadata.
pub struct Parsed {
    pub meta: Metadata,
    pub entries: Vec<(usize, Entry)>,
    pub errors: Vec<(usize, String)>,
}

/// Reads the whole control file. `Ok(None)`: it does not exist.
pub fn parse_file(control: &Path) -> Result<Option<Parsed>, Internal> {
    let Some(file) = open_text(control)? else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(|e| fail("fstat", control, e))?;
    let mut parsed = Parsed {
        meta,
        entries: Vec::new(),
        errors: Vec::new(),
    };
    let mut buf = Vec::new();
    for_each_line(file, |number, line| match line {
        Err(TooLong) => parsed
            .errors
            .push((number, format!("longer than {MAX_LINE} bytes"))),
        Ok(line) => {
            if clean(line, &mut buf) {
                match Entry::parse(&buf) {
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

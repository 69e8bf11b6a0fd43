//! `overlimit compile`: writes `RELAYLIMITS.cdb` as qmail-newmrh writes its
//! cdb (a temporary file, fsync, rename), so readers see the old or the new
//! database, never half of one. A text with bad lines is not compiled: the
//! old cdb then no longer matches, and the plug-in reads the text.

use super::parse_file;
use crate::compiled::{cdb_path, records};
use std::fs::File;
use std::path::Path;

pub const USAGE: &str = "usage: overlimit compile

Compiles RELAYLIMITS into RELAYLIMITS.cdb for constant-time lookups. Refuses
(exit 1) when the text has bad lines; `overlimit check` lists them.";

pub fn run(control: &Path) -> i32 {
    match compile(control) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("overlimit: {e}");
            2
        }
    }
}

fn compile(control: &Path) -> Result<i32, String> {
    let parsed = parse_file(control)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: missing", control.display()))?;
    if !parsed.errors.is_empty() {
        for (line, reason) in &parsed.errors {
            eprintln!("overlimit: {}:{line}: {reason}", control.display());
        }
        eprintln!(
            "overlimit: {}: not compiled; fix the lines above",
            control.display()
        );
        return Ok(1);
    }
    let target = cdb_path(control);
    let mut tmp = target.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let io = |op: &str, p: &Path, e: std::io::Error| format!("{op} {}: {e}", p.display());
    let mut out = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
    crate::cdb::write(&mut out, &records(&parsed.meta, &parsed.entries))
        .map_err(|e| io("write", &tmp, e))?;
    out.sync_all().map_err(|e| io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, &target).map_err(|e| io("rename", &target, e))?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("fsync", dir, e))?;
    }
    let entries = super::counted(parsed.entries.len(), "entry", "entries");
    println!("{}: {entries}", target.display());
    Ok(0)
}

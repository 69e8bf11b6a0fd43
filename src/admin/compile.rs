//! `overlimit compile`: writes `RELAYLIMITS.cdb` as qmail-newmrh writes its
//! cdb (a temporary file, fsync, rename), so readers see the old or the new
//! database, never half of one. A text with bad lines is not compiled: the
//! old cdb then no longer matches, and the plug-in reads the text.

use super::{exit, parse_file, Parsed};
use crate::compiled::{cdb_path, digest, fingerprint, records};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub const USAGE: &str = "usage: overlimit compile

Compiles RELAYLIMITS into RELAYLIMITS.cdb for constant-time lookups. Exit 0
when written, 1 when the text has bad lines (`overlimit check` lists them;
nothing is written), 2 when the text is missing or a file cannot be read or
written.";

pub fn run(control: &Path) -> i32 {
    match compile(control) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("overlimit: {e}");
            exit::TROUBLE
        }
    }
}

/// A filesystem that keeps mtimes to the second (their nanoseconds are 0)
/// could give an edit in the second the text was compiled the same size and
/// mtime. Compiling only a text older than this rules that out there.
const SETTLE: Duration = Duration::from_secs(1);

/// The text parsed with the digest of the very bytes parsed: read again
/// (at most a few times) while its fingerprint changes under us.
fn read_settled(control: &Path) -> Result<(Parsed, Vec<u8>), String> {
    for _ in 0..5 {
        let parsed = parse_file(control)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{}: missing; nothing to compile", control.display()))?;
        use std::os::unix::fs::MetadataExt;
        let coarse = parsed.meta.mtime_nsec() == 0;
        let age = parsed
            .meta
            .modified()
            .ok()
            .filter(|_| coarse)
            .and_then(|m| SystemTime::now().duration_since(m).ok());
        if let Some(wait) = age.and_then(|a| SETTLE.checked_sub(a)) {
            std::thread::sleep(wait + Duration::from_millis(10));
            continue;
        }
        let file = File::open(control).map_err(|e| format!("open {}: {e}", control.display()))?;
        let sum = digest(&file).map_err(|e| format!("read {}: {e}", control.display()))?;
        let after =
            std::fs::metadata(control).map_err(|e| format!("stat {}: {e}", control.display()))?;
        if fingerprint(&after) == fingerprint(&parsed.meta) {
            return Ok((parsed, sum));
        }
    }
    Err(format!(
        "{}: kept changing while being compiled",
        control.display()
    ))
}

fn compile(control: &Path) -> Result<i32, String> {
    let (parsed, sum) = read_settled(control)?;
    if !parsed.errors.is_empty() {
        for (line, reason) in &parsed.errors {
            eprintln!("overlimit: {}:{line}: {reason}", control.display());
        }
        eprintln!(
            "overlimit: {}: not compiled; fix the lines above",
            control.display()
        );
        return Ok(exit::PROBLEMS);
    }
    let target = cdb_path(control);
    let mut tmp = target.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let io = |op: &str, p: &Path, e: std::io::Error| format!("{op} {}: {e}", p.display());
    let mut out = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
    crate::cdb::write(&mut out, &records(&parsed.meta, sum, &parsed.entries))
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
    Ok(exit::OK)
}

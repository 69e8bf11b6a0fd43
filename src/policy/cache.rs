//! The daemon's memory of lookups: what `lookup::resolve` answered for each
//! client, kept while neither the control file nor its cdb has changed.
//!
//! rcptcheck-overlimit reads the control file on every call, which is how it
//! notices an edit at once; a daemon that answers tens of thousands of
//! requests a second would read it as often. Instead each request stats the
//! text and the cdb (two system calls instead of two opens, reads and
//! closes) and compares their device, inode, size, mtime and ctime, the
//! fingerprint that tells `overlimit compile`'s cdb from a stale one
//! (`compiled::fingerprint`); any difference forgets everything. The lookup
//! itself is still the engine's, so there is one parser and one meaning of
//! every line. The stats come before the lookup: an edit between the two
//! is seen by the next request's stats, never hidden.

use crate::client::Client;
use crate::compiled::cdb_path;
use crate::error::Internal;
use crate::lookup::{self, Resolved};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

/// Clients remembered at most; past this the memory starts again, so a
/// flood of distinct names cannot grow it without bound.
pub const MAX_CLIENTS: usize = 100_000;

#[derive(Default)]
pub struct Cache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The fingerprints of the text and of the cdb (`None`: absent) the
    /// entries were looked up under.
    files: Option<(Option<Stamp>, Option<Stamp>)>,
    clients: HashMap<Vec<u8>, Resolved>,
}

impl Cache {
    /// `lookup::resolve`, or what it answered for `client` under the same
    /// files. `notes` is filled only by a real lookup, so a bad line is
    /// logged once per change of the file rather than once per recipient.
    pub fn resolve(
        &self,
        control: &Path,
        client: &Client,
        notes: &mut Vec<String>,
    ) -> Result<Resolved, Internal> {
        let files = Some((stamp(control), stamp(&cdb_path(control))));
        let name = client.name();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.files != files {
                state.clients.clear();
                state.files.clone_from(&files);
            } else if let Some(r) = state.clients.get(&name) {
                return Ok(r.clone());
            }
        }
        let resolved = lookup::resolve(control, client, notes)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Only under the files it was looked up under: another thread may
        // have seen a newer version meanwhile.
        if state.files == files {
            if state.clients.len() >= MAX_CLIENTS {
                state.clients.clear();
            }
            state.clients.insert(name, resolved.clone());
        }
        Ok(resolved)
    }
}

/// `compiled::fingerprint`'s fields as numbers: compared on every request,
/// so never formatted.
type Stamp = [i64; 7];

/// The fingerprint of the file at `path`, or `None` if it cannot be
/// stat'ed (missing, or unreadable: the lookup then says why).
fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some([
        m.dev() as i64,
        m.ino() as i64,
        m.size() as i64,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ])
}

//! The one internal-error type of the engine: a sentence naming the system call
//! and the path that failed, ready for a log line.

use std::fmt;
use std::io;
use std::path::Path;

#[derive(Debug)]
pub struct Internal(pub String);

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Internal {}

/// `open /var/qmail/overlimit/x: Permission denied (os error 13)`.
pub fn fail(op: &str, path: &Path, e: io::Error) -> Internal {
    Internal(format!("{op} {}: {e}", path.display()))
}

//! The one internal-error type of the engine. Each kind of failure is a
//! variant of its own, so a front end that answers differently by kind
//! matches on the variant, never on text; `Display` gives the sentence for a
//! log line, naming the system call or the file at fault.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug)]
pub enum Internal {
    /// A system call failed: `open /var/qmail/overlimit/x: Permission
    /// denied (os error 13)`. Built by [`fail`].
    Io {
        op: String,
        path: PathBuf,
        source: io::Error,
    },
    /// Another process held the lock past the deadline.
    LockTimeout { path: PathBuf, waited: Duration },
    /// Not a file we may write or read as ours: not a regular file, hard
    /// links, replaced while we locked it. `why` ends the sentence.
    NotPlain { path: PathBuf, why: String },
    /// A file of ours whose contents do not parse: a counter, a compiled
    /// record. `why` ends the sentence.
    Damaged { path: PathBuf, why: &'static str },
    /// The file-size limit (`softlimit -f`) is below the text to write.
    SizeLimit {
        path: PathBuf,
        limit: u64,
        need: usize,
    },
    /// Writing one of several counters failed; `restore` holds what went
    /// wrong putting the others back (empty: none changed).
    Rollback {
        first: Box<Internal>,
        restore: Vec<Internal>,
    },
    /// Neither a login nor an address to count the recipient for.
    NoClient,
    /// Transitional: a sentence not yet given a kind of its own.
    Other(String),
}

impl Internal {
    /// An error known only by its sentence.
    pub fn other(text: impl Into<String>) -> Internal {
        Internal::Other(text.into())
    }
}

impl From<String> for Internal {
    fn from(text: String) -> Internal {
        Internal::Other(text)
    }
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Internal::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Internal::LockTimeout { path, waited } => write!(
                f,
                "{}: lock not granted within {} ms",
                path.display(),
                waited.as_millis()
            ),
            Internal::NotPlain { path, why } => write!(f, "{}: {why}", path.display()),
            Internal::Damaged { path, why } => write!(f, "{}: {why}", path.display()),
            Internal::SizeLimit { path, limit, need } => write!(
                f,
                "{}: the file size limit of {limit} bytes is below the counter's {need}; not written",
                path.display()
            ),
            Internal::Rollback { first, restore } if restore.is_empty() => {
                write!(f, "{first}; no counter changed")
            }
            Internal::Rollback { first, restore } => {
                write!(f, "{first}; and putting the counters back failed (")?;
                for (n, e) in restore.iter().enumerate() {
                    if n > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("): they may count it")
            }
            Internal::NoClient => {
                f.write_str("no client: neither SMTPAUTHUSER nor TCPREMOTEIP is set")
            }
            Internal::Other(text) => f.write_str(text),
        }
    }
}

// A value, never changed once built: a panic cannot leave one half-updated.
// Said by hand because `io::Error` may box any error type, which the
// compiler cannot see through, and the front ends run under `catch_unwind`.
impl std::panic::UnwindSafe for Internal {}
impl std::panic::RefUnwindSafe for Internal {}

impl std::error::Error for Internal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Internal::Io { source, .. } => Some(source),
            Internal::Rollback { first, .. } => Some(first.as_ref()),
            _ => None,
        }
    }
}

/// `open /var/qmail/overlimit/x: Permission denied (os error 13)`.
pub fn fail(op: &str, path: &Path, e: io::Error) -> Internal {
    Internal::Io {
        op: op.to_string(),
        path: path.to_path_buf(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_name_the_file_and_the_call() {
        let p = Path::new("/d/x");
        let denied = || fail("open", p, io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(
            denied().to_string(),
            "open /d/x: Permission denied (os error 13)"
        );
        let waited = Duration::from_millis(1500);
        let timeout = Internal::LockTimeout {
            path: p.into(),
            waited,
        };
        assert_eq!(timeout.to_string(), "/d/x: lock not granted within 1500 ms");
        let undone = Internal::Rollback {
            first: Box::new(denied()),
            restore: Vec::new(),
        };
        assert!(undone
            .to_string()
            .ends_with("(os error 13); no counter changed"));
        let torn = Internal::Rollback {
            first: Box::new(denied()),
            restore: vec![denied(), Internal::other("two")],
        };
        assert_eq!(
            torn.to_string(),
            "open /d/x: Permission denied (os error 13); and putting the counters back \
             failed (open /d/x: Permission denied (os error 13); two): they may count it"
        );
        assert_eq!(Internal::from("text".to_string()).to_string(), "text");
    }
}

//! Where the policy service's log lines go. As a daemon, on stderr like every
//! other program (systemd's journal, or whatever the administrator pipes it
//! to). Under spawn(8), stderr is the very socket the replies travel on, so a
//! log line there would be read by smtpd as a broken reply: then the lines go
//! to syslog's mail facility instead, where Postfix's own lines are.

use std::ffi::CString;

const NAME: &str = "overlimit-policy";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logger {
    Stderr,
    Syslog,
}

impl Logger {
    /// For one connection on stdin: syslog when stderr is the same socket
    /// as stdin (spawn(8) gives all three descriptors one socket), else
    /// stderr.
    pub fn for_stdin() -> Logger {
        if same_socket(0, 2) {
            // SAFETY: the ident is a static C string, valid for the process's
            // whole life as openlog requires.
            unsafe { libc::openlog(c"overlimit-policy".as_ptr(), libc::LOG_PID, libc::LOG_MAIL) };
            Logger::Syslog
        } else {
            Logger::Stderr
        }
    }

    /// Writes one line; never fails, never panics.
    pub fn line(self, message: &str) {
        match self {
            Logger::Stderr => {
                // One write(2) per line, without std's stderr lock, which
                // would make the daemon's threads queue behind each other's
                // system calls. A line in one write is never interleaved
                // with another's, in a pipe, a socket or a file opened for
                // appending.
                let line = format!("{NAME}: {message}\n");
                // SAFETY: writing a buffer we own to descriptor 2; a closed
                // descriptor or a full disk only makes the write fail.
                unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            }
            Logger::Syslog => {
                let text = CString::new(message.replace('\0', "\\x00")).unwrap_or_default();
                // SAFETY: a constant "%s" format with one NUL-terminated
                // string argument that outlives the call.
                unsafe {
                    libc::syslog(
                        libc::LOG_MAIL | libc::LOG_INFO,
                        c"%s".as_ptr(),
                        text.as_ptr(),
                    )
                };
            }
        }
    }
}

/// Whether descriptors `a` and `b` are one socket (same device and inode).
fn same_socket(a: i32, b: i32) -> bool {
    let stat = |fd| {
        // SAFETY: fstat writes into a zeroed stat we own; a closed descriptor
        // just makes it fail.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            let ok = libc::fstat(fd, &mut st) == 0;
            (ok && st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some((st.st_dev, st.st_ino))
        }
    };
    matches!((stat(a), stat(b)), (Some(x), Some(y)) if x == y)
}

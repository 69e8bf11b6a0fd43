//! `control/overlimit-senders`: which client names a local account is counted
//! as. One `LOGIN:NAME` a line, comments and white space as in relaylimits.
//!
//! The first NAME listed for a login replaces its default `LOGIN@localhost`
//! (`web1:info@example.com` puts the site and that SMTP user under one counter
//! and one limit). Any NAME listed for a login may be asked for with
//! `sendmail-overlimit --client NAME`. There is no `LOGIN:*`: a login allowed
//! every name could create counters without bound, so such a line is
//! reported as bad and ignored.

use crate::client::{printable, Client};
use crate::control::clean;
use crate::error::{fail, Internal};
use crate::lookup::{for_each_line, open_text, TooLong};
use std::path::Path;

pub const DEFAULT_SENDERS: &str = crate::home_path!("control/overlimit-senders");

/// What the file says about one login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Senders {
    /// The names listed for the login, canonical, in file order.
    pub names: Vec<Vec<u8>>,
}

/// The lines of `path` for `login` (compared exactly: login names are case
/// sensitive). A missing file lists nothing; `notes` gets the bad lines.
pub fn for_login(path: &Path, login: &[u8], notes: &mut Vec<String>) -> Result<Senders, Internal> {
    let Some(text) = open_text(path)? else {
        return Ok(Senders::default());
    };
    let mut found = Senders::default();
    let mut buf = Vec::new();
    for_each_line(text, |number, line| match line {
        Err(TooLong) => notes.push(format!("line {number}: too long; skipped")),
        Ok(line) => {
            if clean(line, &mut buf) {
                found.line(number, &buf, login, notes);
            }
        }
    })
    .map_err(|e| fail("read", path, e))?;
    Ok(found)
}

impl Senders {
    /// Takes in one cleaned line if it is about `login`.
    fn line(&mut self, number: usize, line: &[u8], login: &[u8], notes: &mut Vec<String>) {
        // A login holds no colon; a name may (an IPv6 address).
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            notes.push(format!("line {number}: no colon; skipped"));
            return;
        };
        let (who, name) = (&line[..colon], &line[colon + 1..]);
        if who != login {
            return;
        }
        if name == b"*" {
            notes.push(format!(
                "line {number} ({}:*): a login may not use any name (it could create \
                 counters without bound); list its names one a line; skipped",
                printable(who)
            ));
        } else if let Some(c) = Client::from_name(name) {
            self.names.push(c.name());
        } else {
            notes.push(format!(
                "line {number} ({}): no name; skipped",
                printable(who)
            ));
        }
    }

    /// The client a login is counted as when it asks for none.
    pub fn default_name(&self, login: &[u8]) -> Vec<u8> {
        match self.names.first() {
            Some(n) => n.clone(),
            None => super::identity::default_client(login),
        }
    }

    /// Whether `login` may be counted as `requested` (canonical form): its
    /// default or a listed name.
    pub fn allows(&self, login: &[u8], requested: &[u8]) -> bool {
        self.names.iter().any(|n| n == requested) || requested == self.default_name(login)
    }

    /// Whether the login's counter is a name the administrator mapped it to
    /// (and so possibly shared with an SMTP user or other accounts).
    pub fn mapped(&self) -> bool {
        !self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, login: &str) -> (Senders, Vec<String>) {
        // One file per test: each test reads for a login of its own.
        let name = format!("overlimit-senders-{}-{login}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        let mut notes = Vec::new();
        let s = for_login(&path, login.as_bytes(), &mut notes).unwrap();
        let _ = std::fs::remove_file(&path);
        (s, notes)
    }

    #[test]
    fn the_first_name_replaces_the_default() {
        let text = "# sites\nweb1 : Info@Example.com # shared with SMTP\nweb1:shop@example.com\nweb10:x@y\n";
        let (s, notes) = read(text, "web1");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(s.default_name(b"web1"), b"info@example.com");
        assert!(s.allows(b"web1", b"shop@example.com"));
        // The mapping is how the administrator shares a limit: going back to
        // the account's own name would slip out of it.
        assert!(!s.allows(b"web1", b"web1@localhost"));
        assert!(!s.allows(b"web1", b"x@y"));
    }

    #[test]
    fn a_star_line_is_reported_and_allows_nothing() {
        let (s, notes) = read("www-data:*\n", "www-data");
        assert_eq!(s.default_name(b"www-data"), b"www-data@localhost");
        assert!(!s.allows(b"www-data", b"anything@example.org"));
        assert!(notes[0].contains("www-data:*"), "{notes:?}");
    }

    #[test]
    fn logins_match_exactly_and_bad_lines_are_noted() {
        let (s, notes) = read("Web2:a@b\nnocolon\nweb2:\n", "web2");
        assert_eq!(s, Senders::default());
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn a_missing_file_lists_nothing() {
        let mut notes = Vec::new();
        let s = for_login(
            Path::new("/nonexistent/overlimit-senders"),
            b"web1",
            &mut notes,
        )
        .unwrap();
        assert_eq!(s, Senders::default());
    }
}

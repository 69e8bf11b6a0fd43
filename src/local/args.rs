//! The sendmail command line, as PHP's `sendmail_path` and common tools write
//! it, split into what the real sendmail gets (everything but the wrapper's
//! own long options, unchanged and in order) and what the wrapper needs to
//! count: the recipient arguments and whether `-t` reads the header.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Single-letter flags that take a value, attached (`-fADDR`, `-oi`) or as the
/// next argument: those of Postfix's and qmail's sendmail. Reading a flag as
/// taking no value would count its value as a recipient, which errs high;
/// the reverse would hide a recipient, so this list holds no others.
const WITH_VALUE: &[u8] = b"BCFLNORVXbefhopr";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// For the real sendmail: the caller's arguments minus the wrapper's own.
    pub pass: Vec<OsString>,
    /// The recipient arguments (each may hold a comma-separated list).
    pub recipients: Vec<OsString>,
    /// `-t`: the header's recipients are read too.
    pub from_header: bool,
    /// `-f` or `-r`: the caller chose the envelope sender.
    pub sender_given: bool,
    /// `--client NAME`: count as this name (if the account may use it).
    pub client: Option<OsString>,
    /// `--sendmail PATH`: the real sendmail.
    pub sendmail: Option<OsString>,
    /// `--sender ADDR`: envelope sender unless the caller gave one.
    pub sender: Option<OsString>,
    /// `--stamp`: add an `X-Overlimit-Client` field.
    pub stamp: bool,
    pub help: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// A wrapper option given twice: a site appending one (PHP's fifth
    /// `mail()` argument is appended to `sendmail_path`) must not replace the
    /// administrator's.
    Twice(&'static str),
    NoValue(String),
    Unknown(String),
    /// A mode whose recipients the wrapper cannot count (`-bs`: SMTP on
    /// stdin) or that sends nothing (`-bp`, `-bi`, `-q`, `-I`).
    Mode(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Twice(o) => write!(f, "{o} given twice"),
            ArgError::NoValue(o) => write!(f, "{o} needs a value"),
            ArgError::Unknown(o) => write!(f, "unknown option {o}"),
            ArgError::Mode(o) => write!(
                f,
                "{o} is not supported: only a message on standard input (-bm) can be counted"
            ),
        }
    }
}

impl Args {
    /// Whether the header's recipients count: with `-t`, and also without
    /// recipient arguments, where qmail-inject reads the header by itself.
    pub fn reads_header(&self) -> bool {
        self.from_header || self.recipients.is_empty()
    }

    /// The real sendmail's arguments: `-f SENDER` first when `--sender` is set
    /// and the caller gave no `-f` or `-r`, then the caller's.
    pub fn for_sendmail(&self) -> Vec<OsString> {
        let mut v = Vec::with_capacity(self.pass.len() + 2);
        if let (Some(sender), false) = (&self.sender, self.sender_given) {
            v.push("-f".into());
            v.push(sender.clone());
        }
        v.extend(self.pass.iter().cloned());
        v
    }
}

/// Reads the arguments after the program's name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Args, ArgError> {
    let mut it = args.into_iter();
    let mut a = Args::default();
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            a.pass.push(arg);
            for rest in it.by_ref() {
                a.recipients.push(rest.clone());
                a.pass.push(rest);
            }
        } else if let Some(long) = bytes.strip_prefix(b"--") {
            long_option(&mut a, long, &mut it)?;
        } else if bytes.len() > 1 && bytes[0] == b'-' {
            a.pass.push(arg.clone());
            flags(&mut a, &bytes[1..], &mut it)?;
        } else {
            a.recipients.push(arg.clone());
            a.pass.push(arg);
        }
    }
    Ok(a)
}

fn long_option(
    a: &mut Args,
    long: &[u8],
    it: &mut impl Iterator<Item = OsString>,
) -> Result<(), ArgError> {
    let (name, inline) = match long.iter().position(|&b| b == b'=') {
        Some(i) => (&long[..i], Some(&long[i + 1..])),
        None => (long, None),
    };
    let (slot, shown) = match name {
        b"client" => (&mut a.client, "--client"),
        b"sendmail" => (&mut a.sendmail, "--sendmail"),
        b"sender" => (&mut a.sender, "--sender"),
        b"stamp" | b"help" if inline.is_none() => {
            let flag = if name == b"stamp" {
                &mut a.stamp
            } else {
                &mut a.help
            };
            if *flag && name == b"stamp" {
                return Err(ArgError::Twice("--stamp"));
            }
            *flag = true;
            return Ok(());
        }
        _ => {
            let shown = String::from_utf8_lossy(long);
            return Err(ArgError::Unknown(format!("--{shown}")));
        }
    };
    let value = match inline {
        Some(v) => v.to_vec(),
        None => it.next().map(OsString::into_vec).unwrap_or_default(),
    };
    if value.is_empty() {
        return Err(ArgError::NoValue(shown.into()));
    }
    if slot.is_some() {
        return Err(ArgError::Twice(shown));
    }
    *slot = Some(OsString::from_vec(value));
    Ok(())
}

/// One cluster of single-letter flags (`-ti`, `-oi`, `-fme@x`), without its dash.
fn flags(
    a: &mut Args,
    cluster: &[u8],
    it: &mut impl Iterator<Item = OsString>,
) -> Result<(), ArgError> {
    for (i, &f) in cluster.iter().enumerate() {
        match f {
            b't' => a.from_header = true,
            b'q' | b'I' => return Err(ArgError::Mode(format!("-{}", cluster_text(cluster)))),
            _ if WITH_VALUE.contains(&f) => {
                let value = if i + 1 < cluster.len() {
                    cluster[i + 1..].to_vec()
                } else {
                    let v = it
                        .next()
                        .ok_or(ArgError::NoValue(format!("-{}", f as char)))?;
                    a.pass.push(v.clone());
                    v.into_vec()
                };
                match f {
                    b'f' | b'r' => a.sender_given = true,
                    b'b' if value != b"m" => {
                        let shown = String::from_utf8_lossy(&value);
                        return Err(ArgError::Mode(format!("-b{shown}")));
                    }
                    _ => {}
                }
                return Ok(());
            }
            // Any other letter (-i, -v, -n, -U, ...) means nothing for counting.
            _ => {}
        }
    }
    Ok(())
}

fn cluster_text(cluster: &[u8]) -> String {
    String::from_utf8_lossy(cluster).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, ArgError> {
        parse(args.iter().map(OsString::from))
    }

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn php_style_lines_pass_through_unchanged() {
        let a = p(&["-t", "-i", "-f", "me@x", "-F", "Web Site", "-oi", "a@x"]).unwrap();
        assert!(a.from_header && a.sender_given);
        assert_eq!(strings(&a.recipients), ["a@x"]);
        assert_eq!(
            strings(&a.pass),
            ["-t", "-i", "-f", "me@x", "-F", "Web Site", "-oi", "a@x"]
        );
    }

    #[test]
    fn clustered_and_attached_values_are_understood() {
        let a = p(&["-tifme@x", "-rx@y", "-Ustrange", "b@y", "--", "-c@z"]).unwrap();
        assert!(a.from_header && a.sender_given);
        assert_eq!(strings(&a.recipients), ["b@y", "-c@z"]);
    }

    #[test]
    fn wrapper_options_are_taken_out_and_given_once() {
        let a = p(&[
            "--client",
            "shop@x",
            "--stamp",
            "-t",
            "--sender=bounce@x",
            "--sendmail",
            "/s",
        ])
        .unwrap();
        assert_eq!(a.client.as_deref(), Some("shop@x".as_ref()));
        assert_eq!(strings(&a.pass), ["-t"]);
        assert_eq!(strings(&a.for_sendmail()), ["-f", "bounce@x", "-t"]);
        assert_eq!(
            p(&["--client", "a", "-t", "--client", "b"]),
            Err(ArgError::Twice("--client"))
        );
        assert_eq!(p(&["--client"]), Err(ArgError::NoValue("--client".into())));
        assert_eq!(p(&["--bogus"]), Err(ArgError::Unknown("--bogus".into())));
    }

    #[test]
    fn the_callers_sender_wins_over_the_default() {
        let a = p(&["--sender", "bounce@x", "-r", "own@x", "-t"]).unwrap();
        assert_eq!(strings(&a.for_sendmail()), ["-r", "own@x", "-t"]);
    }

    #[test]
    fn modes_that_cannot_be_counted_are_refused() {
        for bad in [
            &["-bs"][..],
            &["-b", "p"],
            &["-q"],
            &["-q1h"],
            &["-I"],
            &["-bi"],
        ] {
            assert!(matches!(p(bad), Err(ArgError::Mode(_))), "{bad:?}");
        }
        assert!(p(&["-bm", "a@x"]).is_ok());
        assert_eq!(p(&["-f"]), Err(ArgError::NoValue("-f".into())));
    }

    #[test]
    fn without_recipient_arguments_the_header_counts() {
        assert!(p(&["-i"]).unwrap().reads_header());
        assert!(!p(&["-i", "a@x"]).unwrap().reads_header());
        assert!(p(&["-t", "a@x"]).unwrap().reads_header());
    }
}

//! The sendmail command line, read as qmail's and Postfix's sendmail read it
//! (getopt): options end at the first non-option or at `--`; flags cluster
//! (`-ti`); a flag that takes a value takes the rest of its cluster or the
//! next argument (`-fme@x`, `-f me@x`); `-E` and `-J` take the rest of their
//! cluster, as qmail's does; after the first recipient everything is a
//! recipient, `-f x` included. Only what is modelled here is accepted: any
//! other flag or mode is refused by name, since a flag the wrapper does not
//! understand is one whose effect on the recipients it cannot count.

use crate::client::printable;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// The recipient arguments, each possibly a list (`a@x, b@y`).
    pub recipients: Vec<Vec<u8>>,
    /// `-t`: the header's recipients are sent to as well.
    pub from_header: bool,
    /// `-i` or `-oi`: a line of one dot does not end the message.
    pub ignore_dots: bool,
    /// `-f` or `-r` (the last one, as getopt leaves it); empty is `<>`.
    pub sender: Option<Vec<u8>>,
    /// `-F`: the sender's full name.
    pub full_name: Option<Vec<u8>>,
    /// `--client NAME`: count as this name (if the account may use it).
    pub client: Option<Vec<u8>>,
    /// `--sender ADDR`: the envelope sender unless `-f` or `-r` is given.
    pub default_sender: Option<Vec<u8>>,
    pub help: bool,
    pub version: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// A wrapper option given twice: a site appending one (PHP's fifth
    /// `mail()` argument is appended to `sendmail_path`) must not replace the
    /// administrator's.
    Twice(&'static str),
    NoValue(String),
    /// A flag or mode the wrapper does not model.
    Unsupported(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Twice(o) => write!(f, "{o} given twice"),
            ArgError::NoValue(o) => write!(f, "{o} needs a value"),
            ArgError::Unsupported(o) if o == "--sendmail" => write!(
                f,
                "--sendmail is not accepted: the real sendmail is the administrator's \
                 (control/overlimit-sendmail)"
            ),
            ArgError::Unsupported(o) => write!(f, "{o} is not supported"),
        }
    }
}

impl Args {
    /// Every recipient, each one plain address, in order, without repeats: the
    /// arguments (a list each, as sendmail reads `a@x, b@y`) and with `-t` the
    /// header's.
    pub fn resolve(&self, message: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for arg in &self.recipients {
            if arg.trim_ascii().is_empty() {
                return Err("an empty recipient argument".into());
            }
            let found = super::address::list(arg)
                .map_err(|e| format!("recipient argument \"{}\": {e}", printable(arg)))?;
            out.extend(found);
        }
        if self.from_header {
            out.extend(super::message::recipients(message)?);
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(a.clone()));
        if out.is_empty() {
            return Err("no recipients".into());
        }
        Ok(out)
    }
}

/// `-o` values accepted (and ignored but `i`): what PHP users commonly pass.
const O_VALUES: [&[u8]; 4] = [b"i", b"db", b"di", b"em"];

/// Reads the arguments after the program's name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Args, ArgError> {
    let args: Vec<Vec<u8>> = args.into_iter().map(OsString::into_vec).collect();
    let mut a = Args::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == b"--" {
            break;
        }
        if let Some(long) = arg.strip_prefix(b"--") {
            long_option(&mut a, long, &args, &mut i)?;
        } else if arg.len() > 1 && arg[0] == b'-' {
            cluster(&mut a, &arg[1..], &args, &mut i)?;
        } else {
            i -= 1;
            break;
        }
    }
    a.recipients = args[i.min(args.len())..].to_vec();
    Ok(a)
}

/// The value of a flag: the rest of its cluster, else the next argument.
fn value(rest: &[u8], args: &[Vec<u8>], i: &mut usize, shown: String) -> Result<Vec<u8>, ArgError> {
    if !rest.is_empty() {
        return Ok(rest.to_vec());
    }
    let v = args.get(*i).ok_or(ArgError::NoValue(shown))?;
    *i += 1;
    Ok(v.clone())
}

fn long_option(a: &mut Args, long: &[u8], args: &[Vec<u8>], i: &mut usize) -> Result<(), ArgError> {
    let (name, inline) = match long.iter().position(|&b| b == b'=') {
        Some(p) => (&long[..p], Some(&long[p + 1..])),
        None => (long, None),
    };
    let (slot, shown) = match (name, inline) {
        (b"client", _) => (&mut a.client, "--client"),
        (b"sender", _) => (&mut a.default_sender, "--sender"),
        (b"stamp", None) => return Ok(()), // the stamp is always added now
        (b"help", None) => {
            a.help = true;
            return Ok(());
        }
        (b"version", None) => {
            a.version = true;
            return Ok(());
        }
        _ => {
            let shown = String::from_utf8_lossy(name);
            return Err(ArgError::Unsupported(format!("--{shown}")));
        }
    };
    let v = match inline {
        Some(v) => v.to_vec(),
        None => value(b"", args, i, shown.into())?,
    };
    if v.is_empty() {
        return Err(ArgError::NoValue(shown.into()));
    }
    if slot.is_some() {
        return Err(ArgError::Twice(shown));
    }
    *slot = Some(v);
    Ok(())
}

/// One cluster of single-letter flags (`-ti`, `-oi`, `-fme@x`), without its dash.
fn cluster(a: &mut Args, cluster: &[u8], args: &[Vec<u8>], i: &mut usize) -> Result<(), ArgError> {
    for (j, &f) in cluster.iter().enumerate() {
        let rest = &cluster[j + 1..];
        match f {
            b't' => a.from_header = true,
            b'i' => a.ignore_dots = true,
            // Verbose, and "initial submission": nothing for the recipients.
            b'v' | b'U' => {}
            // qmail's sendmail ignores these with the rest of their cluster.
            b'E' | b'J' => return Ok(()),
            b'f' | b'r' | b'F' | b'o' | b'b' => {
                let v = value(rest, args, i, format!("-{}", f as char))?;
                match f {
                    b'f' | b'r' => a.sender = Some(v),
                    b'F' => a.full_name = Some(v),
                    b'o' if O_VALUES.contains(&v.as_slice()) => a.ignore_dots |= v == b"i",
                    b'b' if v == b"m" => {}
                    _ => {
                        let shown = String::from_utf8_lossy(&v);
                        return Err(ArgError::Unsupported(format!("-{}{shown}", f as char)));
                    }
                }
                return Ok(());
            }
            _ => return Err(ArgError::Unsupported(format!("-{}", f as char))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, ArgError> {
        parse(args.iter().map(OsString::from))
    }

    fn rcpts(a: &Args) -> Vec<String> {
        a.recipients
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    #[test]
    fn php_style_lines_are_understood() {
        let a = p(&["-t", "-i", "-f", "me@x", "-F", "Web Site", "-oi", "a@x"]).unwrap();
        assert!(a.from_header && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some(&b"me@x"[..]));
        assert_eq!(a.full_name.as_deref(), Some(&b"Web Site"[..]));
        assert_eq!(rcpts(&a), ["a@x"]);
    }

    #[test]
    fn options_end_at_the_first_recipient_or_at_a_double_dash() {
        // The issue's second hole: flags after the first recipient.
        let a = p(&["-t", "-i", "", "-f", "v1@x", "-f", "v2@x"]).unwrap();
        assert_eq!(rcpts(&a), ["", "-f", "v1@x", "-f", "v2@x"]);
        assert_eq!(a.sender, None);
        let a = p(&["-i", "--", "-t", "b@y"]).unwrap();
        assert!(!a.from_header);
        assert_eq!(rcpts(&a), ["-t", "b@y"]);
        assert_eq!(rcpts(&p(&["-", "-t"]).unwrap()), ["-", "-t"]);
    }

    #[test]
    fn clusters_and_attached_values_are_read_as_getopt_does() {
        let a = p(&["-tifme@x", "-rx@y", "b@y"]).unwrap();
        assert!(a.from_header && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some(&b"x@y"[..]));
        assert_eq!(rcpts(&a), ["b@y"]);
        // -J takes the rest of its cluster, as qmail's sendmail does.
        let a = p(&["-Jf", "v1@x"]).unwrap();
        assert_eq!(
            (a.sender.clone(), rcpts(&a)),
            (None, vec!["v1@x".to_string()])
        );
        // A value taken from the next argument, even one that looks like a flag.
        assert_eq!(
            p(&["-f", "-t"]).unwrap().sender.as_deref(),
            Some(&b"-t"[..])
        );
        assert!(p(&["-f", ""]).unwrap().sender.unwrap().is_empty());
    }

    #[test]
    fn wrapper_options_come_before_the_recipients_and_once() {
        let a = p(&["--client", "shop@x", "--stamp", "-t", "--sender=bounce@x"]).unwrap();
        assert_eq!(a.client.as_deref(), Some(&b"shop@x"[..]));
        assert_eq!(a.default_sender.as_deref(), Some(&b"bounce@x"[..]));
        assert_eq!(
            p(&["--client", "a", "-t", "--client", "b"]),
            Err(ArgError::Twice("--client"))
        );
        assert_eq!(p(&["--client"]), Err(ArgError::NoValue("--client".into())));
        assert_eq!(
            rcpts(&p(&["a@x", "--client", "b"]).unwrap()),
            ["a@x", "--client", "b"]
        );
        assert!(p(&["--help"]).unwrap().help && p(&["--version"]).unwrap().version);
    }

    #[test]
    fn what_is_not_modelled_is_refused_by_name() {
        for (bad, named) in [
            (&["-bs"][..], "-bs"),
            (&["-b", "p"], "-bp"),
            (&["-q"], "-q"),
            (&["-q1h"], "-q"),
            (&["-I"], "-I"),
            (&["-C", "/tmp/x"], "-C"),
            (&["-X", "/tmp/log"], "-X"),
            (&["-O", "x=y"], "-O"),
            (&["-oQ/tmp"], "-oQ/tmp"),
            (&["-tx"], "-x"),
            (&["--sendmail", "/home/site1/evil.sh"], "--sendmail"),
            (&["--sendmail=/x"], "--sendmail"),
            (&["--bogus"], "--bogus"),
        ] {
            assert_eq!(p(bad), Err(ArgError::Unsupported(named.into())), "{bad:?}");
        }
        assert!(p(&["-bm", "-odb", "-odi", "-oem", "-v", "-U", "a@x"]).is_ok());
        assert_eq!(p(&["-f"]), Err(ArgError::NoValue("-f".into())));
        assert!(ArgError::Unsupported("--sendmail".into())
            .to_string()
            .contains("administrator"));
    }
}

/// The invariant of counting by construction, on generated argument lists
/// and headers: whatever the wrapper resolves is a list of plain addresses,
/// each of which an MTA reads as exactly one recipient, none twice; so the
/// number counted (the list's length) is the number handed on.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const ARGS: &[&str] = &[
        "-t",
        "-i",
        "-oi",
        "-f",
        "-fme@x",
        "-r",
        "-F",
        "Web Site",
        "-Jf",
        "-E",
        "--",
        "",
        "-",
        "-tif",
        "-bm",
        "-bs",
        "-v",
        "-U",
        "-odb",
        "--client",
        "n@x",
        "--sender",
        "--stamp",
        "a@x",
        "b@y.example",
        "a@x, b@y",
        "\"q, r\"@x",
        "x\\\",v@y",
        "<c@z>",
        "G: d@w;",
        "a@x b@y",
        "(c) e@v",
        "-x@y",
        "u@[192.0.2.1]",
        "=?utf-8?q?x?= <f@g>",
    ];
    const VALUES: &[&str] = &[
        "a@x",
        " b@y.example",
        "\"Doe, J\" <j@y>",
        "(comment, k@z) l@z",
        "\\\"",
        "\"",
        "(",
        ")",
        "<",
        ">",
        ",",
        ";",
        ":",
        "G:",
        "@",
        "[x]",
        "m@[IPv6:2001:db8::1]",
        "n@x\0o@y",
        "<@r:p@q>",
        "=?utf-8?b?QUJD?=",
        "v1@victim v2@victim",
        "undisclosed-recipients:;",
    ];
    const NAMES: &[&str] = &[
        "To",
        "Cc",
        "Bcc",
        "Resent-To",
        "Resent-Bcc",
        "Apparently-To",
        "Subject",
        "X",
    ];

    fn header() -> impl Strategy<Value = Vec<u8>> {
        let field = (
            0..NAMES.len(),
            prop::collection::vec(0..VALUES.len(), 0..5),
            any::<bool>(),
            any::<bool>(),
        );
        prop::collection::vec(field, 0..6).prop_map(|fields| {
            let mut m = Vec::new();
            for (name, values, fold, crlf) in fields {
                let end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
                m.extend_from_slice(NAMES[name].as_bytes());
                m.extend_from_slice(b": ");
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        m.extend_from_slice(if fold { b",\r\n\t" } else { b", " });
                    }
                    m.extend_from_slice(VALUES[*v].as_bytes());
                }
                m.extend_from_slice(end);
            }
            m.extend_from_slice(b"\nbody To: z@z\n");
            m
        })
    }

    /// What an MTA could split an argument at, or read as an option.
    fn one_recipient_to_any_mta(a: &[u8]) -> bool {
        !a.is_empty()
            && a[0] != b'-'
            && !a
                .iter()
                .any(|b| b",; <>()\"\\\t\r\n\0".contains(b) || *b >= 0x80)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
        ))]

        #[test]
        fn every_recipient_handed_on_is_counted_once(
            argv in prop::collection::vec(0..ARGS.len(), 0..10),
            message in header(),
        ) {
            let argv: Vec<OsString> = argv.iter().map(|&i| OsString::from(ARGS[i])).collect();
            let Ok(args) = parse(argv.clone()) else { return Ok(()) };
            let Ok(list) = args.resolve(&message) else { return Ok(()) };
            let mut seen = std::collections::HashSet::new();
            for a in &list {
                prop_assert!(super::super::address::atomic(a), "{argv:?}: {a:?}");
                prop_assert!(one_recipient_to_any_mta(a), "{argv:?}: {a:?}");
                prop_assert!(seen.insert(a.clone()), "{argv:?}: {a:?} twice");
            }
            // The recipients overlimit-count gets are the arguments after
            // `--`, and read back as exactly that many.
            let mut handed: Vec<OsString> = vec!["-i".into(), "-f".into(), "s@x".into(), "--".into()];
            handed.extend(list.iter().map(|a| OsString::from_vec(a.clone())));
            let back = parse(handed).unwrap();
            prop_assert_eq!(&back.recipients, &list);
        }

        #[test]
        fn folding_never_changes_the_recipients(message in header()) {
            let unfolded: Vec<u8> = String::from_utf8_lossy(&message).replace(",\r\n\t", ", ").into_bytes();
            let a = super::super::message::recipients(&message);
            let b = super::super::message::recipients(&unfolded);
            prop_assert_eq!(a.ok(), b.ok());
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(list) = super::super::address::list(&bytes) {
                prop_assert!(list.iter().all(|a| one_recipient_to_any_mta(a)));
            }
        }
    }
}

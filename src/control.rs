//! One line of `control/relaylimits`: `CLIENT:LIMITS`, read as the seed script
//! read it (`#` starts a comment anywhere, all white space dropped) but split at
//! the last colon and matched exactly.

use crate::bytes::{find, find_last};
pub use crate::client::{range_spelled, Net};
use crate::limits::{LimitError, Limits};
use std::fmt;

/// The left-hand side of a line, canonical: what the cdb stores as its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `:N`, for every client without a line of its own.
    Default,
    /// A user name (lower-cased, its login spelling read as `@`) or an
    /// address (canonical).
    Client(Vec<u8>),
    /// `*@domain`: each user of the domain, with a counter of its own.
    DomainUsers(Vec<u8>),
    /// `@domain`: the domain as a whole, one shared counter.
    Domain(Vec<u8>),
    /// `192.0.2.0/24`: each address of the range, with a counter of its own.
    Range(Net),
    /// `@192.0.2.0/24`: the range as a whole, one shared counter.
    RangeAggregate(Net),
}

/// What a left-hand side means, borrowing its bytes: the one classifier
/// that the plug-in's text scan, the cdb's compiler, `check` and `status`
/// all use, so that no line means one thing to one of them and another to
/// the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Default,
    /// A client's name as written (any case, any spelling of its `@`).
    Client(&'a [u8]),
    DomainUsers(&'a [u8]),
    Domain(&'a [u8]),
    /// A range; `masked` says host bits were set.
    Range {
        net: Net,
        masked: bool,
    },
    RangeAggregate {
        net: Net,
        masked: bool,
    },
}

/// A line that parsed; `masked` says its range had host bits set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Key,
    pub limits: Limits,
    pub masked: bool,
}

/// Why a line was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    NoColon,
    /// `*@` or `@` with nothing after it: a rule no client can ever meet.
    NoDomain,
    BadRange(String),
    Limit(LimitError),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NoColon => write!(f, "no colon"),
            LineError::NoDomain => write!(f, "no domain after the @"),
            LineError::BadRange(r) => write!(f, "bad range {r:?}"),
            LineError::Limit(e) => e.fmt(f),
        }
    }
}

/// Strips the comment and every white-space byte of `raw` into `out`; returns
/// false for a line left empty, which is skipped.
pub fn clean(raw: &[u8], out: &mut Vec<u8>) -> bool {
    let (end, spaced) = comment_and_space(raw);
    out.clear();
    if spaced {
        strip_into(&raw[..end], out);
    } else {
        out.extend_from_slice(&raw[..end]);
    }
    !out.is_empty()
}

/// As `clean`, but copies only a line that has white space before its
/// comment: the others (most lines) are returned as a part of `raw`, which
/// spares the plug-in's scan a copy of every line. The result may be empty.
pub fn cleaned<'a>(raw: &'a [u8], out: &'a mut Vec<u8>) -> &'a [u8] {
    let (end, spaced) = comment_and_space(raw);
    if !spaced {
        return &raw[..end];
    }
    strip_into(&raw[..end], out);
    out
}

/// Where the comment of `raw` starts (its length without one), and whether
/// white space comes before it. Each pass has no branch per byte, which the
/// compiler turns into vector compares: the scan asks this of every line.
fn comment_and_space(raw: &[u8]) -> (usize, bool) {
    // White space and `#` are all below `$`, and most lines hold no byte
    // that is.
    let low = raw.iter().fold(false, |low, &b| low | (b < b'$'));
    if !low {
        return (raw.len(), false);
    }
    let end = find(b'#', raw).unwrap_or(raw.len());
    let spaced = raw[..end]
        .iter()
        .fold(false, |spaced, b| spaced | b.is_ascii_whitespace());
    (end, spaced)
}

/// Copies `text` into `out` without its white space: every byte is written
/// and only the others advance, so there is no branch per byte nor a copy
/// per run between blanks (a windows line has several).
fn strip_into(text: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(text.len(), 0);
    let mut kept = 0;
    for &b in text {
        out[kept] = b;
        kept += usize::from(!b.is_ascii_whitespace());
    }
    out.truncate(kept);
}

/// Splits a cleaned line at its last colon.
pub fn split(line: &[u8]) -> Result<(&[u8], &[u8]), LineError> {
    let colon = find_last(b':', line).ok_or(LineError::NoColon)?;
    Ok((&line[..colon], &line[colon + 1..]))
}

/// Classifies a left-hand side (cleaned, before its last colon).
pub fn classify(key: &[u8]) -> Result<Kind<'_>, LineError> {
    let range = |text: &[u8]| {
        Net::parse(text).ok_or_else(|| LineError::BadRange(String::from_utf8_lossy(text).into()))
    };
    if key.is_empty() {
        return Ok(Kind::Default);
    }
    if let Some(domain) = key.strip_prefix(b"*@") {
        return non_empty(domain).map(Kind::DomainUsers);
    }
    if let Some(rest) = key.strip_prefix(b"@") {
        if range_spelled(rest) {
            let (net, masked) = range(rest)?;
            return Ok(Kind::RangeAggregate { net, masked });
        }
        return non_empty(rest).map(Kind::Domain);
    }
    if range_spelled(key) {
        let (net, masked) = range(key)?;
        return Ok(Kind::Range { net, masked });
    }
    Ok(Kind::Client(key))
}

impl Entry {
    /// Parses a cleaned, non-empty line completely, reading login spellings
    /// with `atchars` (see `client::atchars`).
    pub fn parse_with(line: &[u8], atchars: &[u8]) -> Result<Entry, LineError> {
        let (key, limits) = split(line)?;
        let kind = classify(key)?;
        let limits = Limits::parse(limits).map_err(LineError::Limit)?;
        Ok(Entry {
            key: Key::from_kind(kind, atchars),
            limits,
            masked: kind.masked(),
        })
    }

    /// As `parse_with`, with `OVERLIMIT_ATCHARS` from the environment.
    pub fn parse(line: &[u8]) -> Result<Entry, LineError> {
        Entry::parse_with(line, &crate::client::atchars())
    }
}

/// A domain of a `*@` or `@` line; empty is an error.
fn non_empty(domain: &[u8]) -> Result<&[u8], LineError> {
    if domain.is_empty() {
        return Err(LineError::NoDomain);
    }
    Ok(domain)
}

impl Kind<'_> {
    pub fn masked(&self) -> bool {
        match self {
            Kind::Range { masked, .. } | Kind::RangeAggregate { masked, .. } => *masked,
            _ => false,
        }
    }
}

impl Key {
    /// Classifies a left-hand side; the flag is set when a range was masked.
    pub fn parse(key: &[u8]) -> Result<(Key, bool), LineError> {
        let kind = classify(key)?;
        Ok((
            Key::from_kind(kind, &crate::client::atchars()),
            kind.masked(),
        ))
    }

    /// The canonical key of a classified left-hand side.
    pub fn from_kind(kind: Kind<'_>, atchars: &[u8]) -> Key {
        match kind {
            Kind::Default => Key::Default,
            Kind::Client(c) => Key::Client(client_key(c, atchars)),
            Kind::DomainUsers(d) => Key::DomainUsers(d.to_ascii_lowercase()),
            Kind::Domain(d) => Key::Domain(d.to_ascii_lowercase()),
            Kind::Range { net, .. } => Key::Range(net),
            Kind::RangeAggregate { net, .. } => Key::RangeAggregate(net),
        }
    }

    /// The key's bytes in the cdb: the text a line would carry, canonical.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Key::Default => Vec::new(),
            Key::Client(c) => c.clone(),
            Key::DomainUsers(d) => [b"*@", &d[..]].concat(),
            Key::Domain(d) => [b"@", &d[..]].concat(),
            Key::Range(n) => n.to_string().into_bytes(),
            Key::RangeAggregate(n) => format!("@{n}").into_bytes(),
        }
    }

    /// Why no client can ever meet this key, if none can: a line that parses
    /// but does nothing, which `overlimit check` reports.
    pub fn never_matches(&self) -> Option<&'static str> {
        let address_like = |c: &[u8]| {
            let v4 = c.contains(&b'.') && c.iter().all(|b| b.is_ascii_digit() || *b == b'.');
            let v6 =
                c.contains(&b':') && c.iter().all(|b| b.is_ascii_hexdigit() || b".:".contains(b));
            (v4 || v6) && crate::client::parse_ip(c).is_none()
        };
        match self {
            Key::Client(c) if address_like(c) => {
                Some("not a valid address, and no login looks like one")
            }
            Key::Client(c) if c.starts_with(b"*") => {
                Some("`*` is a wildcard only in `*@domain`; this names a login starting with `*`")
            }
            Key::DomainUsers(d) | Key::Domain(d) if d.contains(&b'@') => {
                Some("a domain holds no `@` (a login's domain is after its last `@`)")
            }
            Key::DomainUsers(d) if range_spelled(d) => {
                Some("a range is not a domain: write RANGE:LIMITS for each address of a range")
            }
            Key::DomainUsers(d) | Key::Domain(d) if d.contains(&b'*') => {
                Some("`*` is a wildcard only in front of `@domain`")
            }
            _ => None,
        }
    }
}

/// Writes the canonical key of a classified left-hand side into `out`, the
/// bytes of `Key::from_kind(kind, atchars).to_bytes()` in a buffer that the
/// text scan reuses for every line whose key it needs.
pub fn write_key(kind: Kind<'_>, atchars: &[u8], out: &mut Vec<u8>) {
    let lower = |prefix: &[u8], d: &[u8], out: &mut Vec<u8>| {
        out.clear();
        out.extend_from_slice(prefix);
        out.extend(d.iter().map(u8::to_ascii_lowercase));
    };
    match kind {
        Kind::Default => out.clear(),
        Kind::Client(c) => match crate::client::parse_ip(c) {
            Some(ip) => shown_into(format_args!("{ip}"), out),
            None => crate::client::login_into(c, atchars, out),
        },
        Kind::DomainUsers(d) => lower(b"*@", d, out),
        Kind::Domain(d) => lower(b"@", d, out),
        Kind::Range { net, .. } => shown_into(format_args!("{net}"), out),
        Kind::RangeAggregate { net, .. } => shown_into(format_args!("@{net}"), out),
    }
}

/// Writes `shown` into `out` in place of what it held, without a string
/// of its own: `status` asks for every range's key when it counts ranges.
fn shown_into(shown: fmt::Arguments<'_>, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    // Writing to a `Vec` cannot fail.
    let _ = out.write_fmt(shown);
}

/// A client's name as a key: an address in canonical form, else the login
/// lower-cased, with its spelling of `@` read as the plug-in reads it.
pub fn client_key(key: &[u8], atchars: &[u8]) -> Vec<u8> {
    crate::client::Client::from_login(key, atchars).map_or_else(Vec::new, |c| c.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> Result<Entry, LineError> {
        let mut buf = Vec::new();
        assert!(clean(s.as_bytes(), &mut buf));
        Entry::parse(&buf)
    }

    #[test]
    fn splits_at_last_colon_for_ipv6() {
        let e = entry("2001:DB8:0::25:500").unwrap();
        assert_eq!(e.key, Key::Client(b"2001:db8::25".to_vec()));
        assert_eq!(e.limits.to_string(), "500");
    }

    #[test]
    fn comments_and_blanks_anywhere_are_dropped() {
        let e = entry(" Test@Example.com : 1 000 # one thousand\r").unwrap();
        assert_eq!(e.key, Key::Client(b"test@example.com".to_vec()));
        assert_eq!(e.limits.to_string(), "1000");
        let mut buf = Vec::new();
        assert!(!clean(b"   # nothing\r", &mut buf));
    }

    #[test]
    fn key_kinds() {
        assert_eq!(entry(":5").unwrap().key, Key::Default);
        assert_eq!(
            entry("*@Ex.com:5").unwrap().key,
            Key::DomainUsers(b"ex.com".to_vec())
        );
        assert_eq!(
            entry("@ex.com:5").unwrap().key,
            Key::Domain(b"ex.com".to_vec())
        );
        let e = entry("192.0.2.7/24:5").unwrap();
        assert_eq!(e.key.to_bytes(), b"192.0.2.0/24");
        assert!(e.masked);
        let e = entry("::ffff:10.0.0.0/104:5").unwrap();
        assert_eq!(e.key.to_bytes(), b"10.0.0.0/8");
        let e = entry("@2001:db8::1/64:5").unwrap();
        assert_eq!(e.key.to_bytes(), b"@2001:db8::/64");
        assert!(e.masked);
        assert_eq!(
            entry("@shop.example:5").unwrap().key,
            Key::Domain(b"shop.example".to_vec())
        );
    }

    #[test]
    fn a_slash_in_a_login_is_its_at_not_a_bad_range() {
        let e = Entry::parse_with(b"web/1:1", crate::client::DEFAULT_ATCHARS).unwrap();
        assert_eq!(e.key, Key::Client(b"web@1".to_vec()));
        let e = Entry::parse_with(b"web/1:1", b"@").unwrap();
        assert_eq!(e.key, Key::Client(b"web/1".to_vec()));
        let e = Entry::parse_with(b"User%Shop.example:1", crate::client::DEFAULT_ATCHARS);
        assert_eq!(e.unwrap().key, Key::Client(b"user@shop.example".to_vec()));
    }

    #[test]
    fn keys_that_can_never_match() {
        for never in [
            "300.1.2.3",
            "*example.org",
            "*@a@b",
            "@a@b",
            "*@10.0.0.0/8",
            "1:2:3:4:5:6:7:8:9",
        ] {
            let (key, _) = Key::parse(never.as_bytes()).unwrap();
            assert!(key.never_matches().is_some(), "{never}");
        }
        for fine in [
            "1.2.3.4",
            "web",
            "a@b",
            "*@b",
            "@b",
            "10.0.0.0/8",
            "@10.0.0.0/8",
            "1234",
        ] {
            let (key, _) = Key::parse(fine.as_bytes()).unwrap();
            assert_eq!(key.never_matches(), None, "{fine}");
        }
    }

    #[test]
    fn bad_lines() {
        assert_eq!(entry("no colon here"), Err(LineError::NoColon));
        assert!(matches!(
            entry("10.0.0.0/33:5"),
            Err(LineError::BadRange(_))
        ));
        assert!(matches!(entry("10.0.0/8:5"), Err(LineError::BadRange(_))));
        assert!(matches!(
            entry("@300.0.0.0/8:5"),
            Err(LineError::BadRange(_))
        ));
        assert!(matches!(
            entry("x@y:"),
            Err(LineError::Limit(LimitError::Empty))
        ));
        assert_eq!(entry("*@:5"), Err(LineError::NoDomain));
        assert_eq!(entry(" @ :5 # no domain"), Err(LineError::NoDomain));
    }

    #[test]
    fn ranges_contain_their_addresses() {
        let (n, _) = Net::parse(b"2001:db8::/48").unwrap();
        assert!(n.contains("2001:db8:0:1::5".parse().unwrap()));
        assert!(!n.contains("2001:db9::5".parse().unwrap()));
        assert!(!n.contains("10.0.0.1".parse().unwrap()));
        let (all, _) = Net::parse(b"0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
    }
}

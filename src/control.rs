//! One line of `control/relaylimits`: `CLIENT:LIMITS`, read as the seed script
//! read it (`#` starts a comment anywhere, all white space dropped) but split at
//! the last colon and matched exactly.

use crate::bytes::{find, find_last};
use crate::client::{canonical_ip, parse_ip};
use crate::limits::{LimitError, Limits};
use std::fmt;
use std::net::IpAddr;

/// The left-hand side of a line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `:N`, for every client without a line of its own.
    Default,
    /// A user name (lower-cased) or an address (canonical).
    Client(Vec<u8>),
    /// `*@domain`: each user of the domain, with a counter of its own.
    DomainUsers(Vec<u8>),
    /// `@domain`: the domain as a whole, one shared counter.
    Domain(Vec<u8>),
    /// `192.0.2.0/24`: each address of the range, with a counter of its own.
    Range(Net),
}

/// An address range, its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    pub addr: IpAddr,
    pub len: u8,
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
    out.clear();
    let end = find(b'#', raw).unwrap_or(raw.len());
    // Copied a run at a time: most lines hold no white space at all.
    for run in raw[..end].split(u8::is_ascii_whitespace) {
        out.extend_from_slice(run);
    }
    !out.is_empty()
}

/// Splits a cleaned line at its last colon.
pub fn split(line: &[u8]) -> Result<(&[u8], &[u8]), LineError> {
    let colon = find_last(b':', line).ok_or(LineError::NoColon)?;
    Ok((&line[..colon], &line[colon + 1..]))
}

impl Entry {
    /// Parses a cleaned, non-empty line completely.
    pub fn parse(line: &[u8]) -> Result<Entry, LineError> {
        let (key, limits) = split(line)?;
        let (key, masked) = Key::parse(key)?;
        let limits = Limits::parse(limits).map_err(LineError::Limit)?;
        Ok(Entry {
            key,
            limits,
            masked,
        })
    }
}

/// A domain of a `*@` or `@` line, lower-cased; empty is an error.
fn non_empty(domain: &[u8]) -> Result<Vec<u8>, LineError> {
    if domain.is_empty() {
        return Err(LineError::NoDomain);
    }
    Ok(domain.to_ascii_lowercase())
}

impl Key {
    /// Classifies a left-hand side; the flag is set when a range was masked.
    pub fn parse(key: &[u8]) -> Result<(Key, bool), LineError> {
        if key.is_empty() {
            return Ok((Key::Default, false));
        }
        if let Some(domain) = key.strip_prefix(b"*@") {
            return non_empty(domain).map(|d| (Key::DomainUsers(d), false));
        }
        if let Some(domain) = key.strip_prefix(b"@") {
            return non_empty(domain).map(|d| (Key::Domain(d), false));
        }
        // A slash without an `@` can only be meant as a range.
        if key.contains(&b'/') && !key.contains(&b'@') {
            let (net, masked) = Net::parse(key)
                .ok_or_else(|| LineError::BadRange(String::from_utf8_lossy(key).into()))?;
            return Ok((Key::Range(net), masked));
        }
        Ok((Key::Client(client_key(key)), false))
    }

    /// The key's bytes in the cdb: the text a line would carry, canonical.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Key::Default => Vec::new(),
            Key::Client(c) => c.clone(),
            Key::DomainUsers(d) => [b"*@", &d[..]].concat(),
            Key::Domain(d) => [b"@", &d[..]].concat(),
            Key::Range(n) => n.to_string().into_bytes(),
        }
    }
}

/// A client's name as a key: an address in canonical form, else lower case.
pub fn client_key(key: &[u8]) -> Vec<u8> {
    match parse_ip(key) {
        Some(ip) => ip.to_string().into_bytes(),
        None => key.to_ascii_lowercase(),
    }
}

impl Net {
    /// Parses `addr/len`, masking host bits (the flag says whether any were set).
    /// An IPv4-mapped IPv6 range becomes the IPv4 range it covers.
    pub fn parse(text: &[u8]) -> Option<(Net, bool)> {
        let slash = text.iter().position(|&b| b == b'/')?;
        let addr: IpAddr = std::str::from_utf8(&text[..slash]).ok()?.parse().ok()?;
        let len = crate::limits::parse_number(&text[slash + 1..])?;
        let (addr, len) = match (addr, canonical_ip(addr)) {
            (IpAddr::V6(_), IpAddr::V4(v4)) if len >= 96 => (IpAddr::V4(v4), len - 96),
            _ => (addr, len),
        };
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if len > bits {
            return None;
        }
        let net = Net::new(addr, len as u8);
        Some((net, net.addr != addr))
    }

    /// The range of `len` bits holding `addr`.
    pub fn new(addr: IpAddr, len: u8) -> Net {
        Net {
            addr: mask(addr, len),
            len,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
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

//! Who is sending: the authenticated user or the remote address, in the one
//! canonical form that the control file, the cdb and the counter names share.
//!
//! A login is read as vpopmail reads it: without an `@`, the first of the
//! other `OVERLIMIT_ATCHARS` (default `%` and `/`) stands for the `@`, so
//! `user%domain` and `user/domain` are the client `user@domain` and cannot
//! escape that domain's limits with a fresh counter.

use crate::bytes::find;
use std::fmt;
use std::net::IpAddr;

/// The characters that stand for `@` in a login unless `OVERLIMIT_ATCHARS`
/// says otherwise.
pub const DEFAULT_ATCHARS: &[u8] = b"@%/";

/// A counted sender. User names are lower-cased (matching is
/// case-insensitive); addresses are kept parsed so ranges can match them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    User(Vec<u8>),
    Ip(IpAddr),
}

impl Client {
    /// Reads a client name as given (environment or command line): an address
    /// in any form qmail's tcpserver writes, else a login in any of the
    /// spellings `OVERLIMIT_ATCHARS` allows.
    pub fn from_name(name: &[u8]) -> Option<Client> {
        Client::from_login(name, &atchars())
    }

    /// As `from_name`, with the characters that stand for `@` given.
    pub fn from_login(name: &[u8], atchars: &[u8]) -> Option<Client> {
        if name.is_empty() {
            return None;
        }
        Some(match parse_ip(name) {
            Some(ip) => Client::Ip(ip),
            None => {
                let mut user = Vec::with_capacity(name.len());
                login_into(name, atchars, &mut user);
                Client::User(user)
            }
        })
    }

    /// The canonical name: the counter's name and the control file's key.
    pub fn name(&self) -> Vec<u8> {
        match self {
            Client::User(n) => n.clone(),
            Client::Ip(ip) => ip.to_string().into_bytes(),
        }
    }

    /// The domain of a user name with one: what `*@domain` and `@domain` lines
    /// refer to. A "domain" spelled as an address range has none: `@RANGE`
    /// is a range's aggregate, never a domain's.
    pub fn domain(&self) -> Option<&[u8]> {
        match self {
            Client::User(n) => {
                let at = n.iter().rposition(|&b| b == b'@')?;
                let d = &n[at + 1..];
                (!d.is_empty() && !range_spelled(d)).then_some(d)
            }
            Client::Ip(_) => None,
        }
    }
}

/// Writes the canonical form of a login (not an address) into `out`:
/// lower case, its spelling of `@` read as `@`. The text scan calls it on
/// every line, into one buffer.
pub fn login_into(login: &[u8], atchars: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend(login.iter().map(u8::to_ascii_lowercase));
    if let Some(at) = at_position(login, atchars) {
        out[at] = b'@';
    }
}

/// Where a login without an `@` has the character that stands for it: the
/// first of `atchars` in it (as vpopmail splits `user%domain`); `None` for a
/// login with an `@`, whose other characters are its own.
fn at_position(login: &[u8], atchars: &[u8]) -> Option<usize> {
    if login.contains(&b'@') {
        return None;
    }
    login.iter().position(|b| *b != b'@' && atchars.contains(b))
}

/// `OVERLIMIT_ATCHARS`: the characters that stand for `@` in a login. Only
/// punctuation that cannot be part of an address counts (a `.` or `:` would
/// turn addresses into logins); unset or empty is the default `@%/`.
pub fn atchars() -> Vec<u8> {
    match std::env::var_os("OVERLIMIT_ATCHARS").filter(|v| !v.is_empty()) {
        None => DEFAULT_ATCHARS.to_vec(),
        Some(v) => {
            use std::os::unix::ffi::OsStrExt;
            v.as_bytes()
                .iter()
                .copied()
                .filter(|b| b.is_ascii_punctuation() && !b".:".contains(b))
                .collect()
        }
    }
}

/// A name for a terminal or JSON: valid UTF-8 stays as it is (`jürgen`);
/// control characters, the invisible ones that reorder or hide text (a
/// hostile login could otherwise disguise itself in `status`), the backslash
/// and bytes that are not UTF-8 become `\xHH`. `unescape` reads it back, so
/// `reset` takes what `status` prints.
pub fn shown(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' | '\u{feff}');
            if c.is_control() || invisible || c == '\\' {
                let mut b = [0u8; 4];
                for x in c.encode_utf8(&mut b).bytes() {
                    s.push_str(&format!("\\x{x:02x}"));
                }
            } else {
                s.push(c);
            }
        }
        for &b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// Undoes `shown` (and `printable`): each `\xHH` becomes its byte.
pub fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hex = text.get(i + 2..i + 4).and_then(|h| {
            let h = std::str::from_utf8(h).ok()?;
            u8::from_str_radix(h, 16).ok()
        });
        match (text[i], text.get(i + 1), hex) {
            (b'\\', Some(b'x'), Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Parses dotted IPv4 or any IPv6 form, folding IPv4-mapped IPv6
/// (`::ffff:192.0.2.1`, as TCP6REMOTEIP gives it) to plain IPv4.
pub fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    // Cheap reject first: the plug-in calls this on every control line key.
    if text.len() > 45
        || !text
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b":.".contains(b))
    {
        return None;
    }
    let ip: IpAddr = std::str::from_utf8(text).ok()?.parse().ok()?;
    Some(canonical_ip(ip))
}

/// IPv4-mapped IPv6 becomes IPv4; everything else is left as it is.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An address range, its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    pub addr: IpAddr,
    pub len: u8,
}

/// Whether `text` is written as an address range: a `/` after something
/// made only of hex digits, dots and colons with at least one dot or colon
/// (`192.0.2.0/24`, `2001:db8::/64`, also a broken `300.1.2.3/8`), and no
/// `@`. Anything else with a `/` is a login spelling (`web/1` is `web@1`).
pub fn range_spelled(text: &[u8]) -> bool {
    let Some(slash) = find(b'/', text) else {
        return false;
    };
    let addr = &text[..slash];
    !text.contains(&b'@')
        && addr.iter().any(|b| b".:".contains(b))
        && addr
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b".:".contains(b))
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

/// Escapes a name for a log line or a terminal: printable ASCII and spaces
/// stay, every other byte becomes `\xHH`, so a hostile name cannot forge log
/// lines.
pub fn printable(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len());
    for &b in name {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> String {
        String::from_utf8(Client::from_name(s.as_bytes()).unwrap().name()).unwrap()
    }

    #[test]
    fn addresses_are_canonical() {
        assert_eq!(name("2001:DB8:0::7"), "2001:db8::7");
        assert_eq!(name("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(name("192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn users_are_lower_case_with_domain() {
        let c = Client::from_name(b"Info@Example.COM").unwrap();
        assert_eq!(c.name(), b"info@example.com");
        assert_eq!(c.domain(), Some(&b"example.com"[..]));
        assert_eq!(Client::from_name(b"web1").unwrap().domain(), None);
        assert_eq!(Client::from_name(b"odd@").unwrap().domain(), None);
    }

    #[test]
    fn login_spellings_are_the_at_form() {
        let at = Client::from_login(b"Web%Shop.example", DEFAULT_ATCHARS).unwrap();
        assert_eq!(at.name(), b"web@shop.example");
        let slash = Client::from_login(b"web/shop.example", DEFAULT_ATCHARS).unwrap();
        assert_eq!(slash, at);
        let literal = Client::from_login(b"web%shop.example", b"@").unwrap();
        assert_eq!(literal.name(), b"web%shop.example");
        // With an `@`, the others are part of the name.
        let both = Client::from_login(b"a%b@c", DEFAULT_ATCHARS).unwrap();
        assert_eq!(both.name(), b"a%b@c");
    }

    #[test]
    fn shown_names_read_back() {
        for name in [&b"j\xc3\xbcrgen"[..], b"a\xffb", b"back\\slash\n"] {
            assert_eq!(unescape(shown(name).as_bytes()), name);
        }
        assert_eq!(shown("jürgen".as_bytes()), "jürgen");
        assert_eq!(shown("a\u{202e}b".as_bytes()), "a\\xe2\\x80\\xaeb");
        assert_eq!(shown(b"a\xffb"), "a\\xffb");
    }

    #[test]
    fn printable_escapes_control_bytes() {
        assert_eq!(printable(b"a\nb\xff"), "a\\x0ab\\xff");
    }
}

//! Who is sending: the authenticated user or the remote address, in the one
//! canonical form that the control file, the cdb and the counter names share.

use std::net::IpAddr;

/// A counted sender. User names are lower-cased (matching is
/// case-insensitive); addresses are kept parsed so ranges can match them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    User(Vec<u8>),
    Ip(IpAddr),
}

impl Client {
    /// Reads a client name as given (environment or command line): an address
    /// in any form qmail's tcpserver writes, else a user name.
    pub fn from_name(name: &[u8]) -> Option<Client> {
        if name.is_empty() {
            return None;
        }
        Some(match parse_ip(name) {
            Some(ip) => Client::Ip(ip),
            None => Client::User(name.to_ascii_lowercase()),
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
    /// refer to.
    pub fn domain(&self) -> Option<&[u8]> {
        match self {
            Client::User(n) => {
                let at = n.iter().rposition(|&b| b == b'@')?;
                let d = &n[at + 1..];
                (!d.is_empty()).then_some(d)
            }
            Client::Ip(_) => None,
        }
    }
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
    fn printable_escapes_control_bytes() {
        assert_eq!(printable(b"a\nb\xff"), "a\\x0ab\\xff");
    }
}

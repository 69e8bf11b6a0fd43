//! `OVERLIMIT_REDIS`: which server holds the shared counters, read once.
//!
//! Two spellings, as the spec gives them: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`
//! and `unix:///PATH[?db=N&password=P&user=U]`. A password may be
//! percent-encoded. `rediss://` (TLS) is refused with a reason: the client is
//! std only, so that the plug-in stays small and starts fast; a server on
//! another host is reached through a TLS tunnel (stunnel, spiped) on a local
//! port or socket. No error message repeats the password.

use crate::error::Internal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// A parsed `OVERLIMIT_REDIS`.
#[derive(Clone, PartialEq, Eq)]
pub struct Server {
    pub address: Address,
    /// The database `SELECT`ed after connecting.
    pub db: u32,
    /// For `AUTH`: an ACL user (Redis 6) or none (the `default` user).
    pub user: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    /// `timeout=MS`: a deadline shorter than the caller's, for every step.
    pub timeout: Option<Duration>,
    /// `fallback=HOSTS`: while the server cannot be reached, count in the
    /// local counter directory against 1/HOSTS of each limit (see
    /// `backend/fallback.rs`); `None`: an outage is an internal error.
    pub fallback: Option<u32>,
}

/// Shown without the password, which must reach no log.
impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.shown())
    }
}

const DEFAULT_PORT: u16 = 6379;

impl Server {
    /// Reads the variable's value; the error names the variable and the part
    /// at fault.
    pub fn parse(url: &str) -> Result<Server, Internal> {
        let bad = |what: &str| Internal::other(format!("OVERLIMIT_REDIS: {what}"));
        if let Some(rest) = url.strip_prefix("redis://") {
            return tcp(rest).map_err(|e| bad(&e));
        }
        if let Some(rest) = url.strip_prefix("unix://") {
            return unix(rest).map_err(|e| bad(&e));
        }
        if url.starts_with("rediss://") {
            return Err(bad(
                "TLS (rediss://) is not supported; reach a remote server through a local \
                 TLS tunnel (stunnel, spiped) and name its local end",
            ));
        }
        Err(bad(
            "not a redis://HOST:PORT/DB or unix:///PATH?db=N address",
        ))
    }

    /// The earlier of the caller's deadline and this address's `timeout`.
    pub fn deadline(&self, caller: Instant) -> Instant {
        match self.timeout.and_then(|t| Instant::now().checked_add(t)) {
            Some(mine) => mine.min(caller),
            None => caller,
        }
    }

    /// The address for messages: never the password.
    pub fn shown(&self) -> String {
        let place = match &self.address {
            Address::Tcp { host, port } if host.contains(':') => format!("redis://[{host}]:{port}"),
            Address::Tcp { host, port } => format!("redis://{host}:{port}"),
            Address::Unix(p) => format!("unix://{}", p.display()),
        };
        format!("{place} db {}", self.db)
    }
}

fn tcp(rest: &str) -> Result<Server, String> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (auth, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => {
            let (u, p) = a
                .split_once(':')
                .ok_or("a user without a password (USER:PASSWORD@)")?;
            let user = (!u.is_empty()).then(|| decode(u, "user")).transpose()?;
            (user, Some(decode(p, "password")?))
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("an IPv6 host without its closing ]")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
    };
    let db = if path.is_empty() { 0 } else { db_number(path)? };
    let mut server = Server {
        address: Address::Tcp {
            host: host.to_string(),
            port,
        },
        db,
        user,
        password,
        timeout: None,
        fallback: None,
    };
    for (name, value) in parameters(query) {
        if !both_forms(&mut server, name, value)? {
            return Err(format!("unknown parameter {name:?} (timeout, fallback)"));
        }
    }
    Ok(server)
}

/// The parameters both address forms take (`timeout`, `fallback`); `false`
/// for any other name, which the caller reads or refuses.
fn both_forms(server: &mut Server, name: &str, value: &str) -> Result<bool, String> {
    match name {
        "timeout" => server.timeout = Some(timeout(value)?),
        "fallback" => server.fallback = Some(hosts(value)?),
        _ => return Ok(false),
    }
    Ok(true)
}

fn parameters(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Milliseconds, 1 to 60000.
fn timeout(s: &str) -> Result<Duration, String> {
    match crate::limits::parse_number(s.as_bytes()) {
        Some(ms @ 1..=60_000) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "timeout {s:?} is not a number of milliseconds from 1 to 60000"
        )),
    }
}

/// The number of hosts sharing the limits, 1 to 1000.
fn hosts(s: &str) -> Result<u32, String> {
    match crate::limits::parse_number(s.as_bytes()) {
        Some(n @ 1..=1000) => Ok(n as u32),
        _ => Err(format!(
            "fallback {s:?} is not a number of hosts from 1 to 1000"
        )),
    }
}

fn unix(rest: &str) -> Result<Server, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err("a unix socket needs an absolute path (unix:///PATH)".into());
    }
    let mut server = Server {
        address: Address::Unix(PathBuf::from(path)),
        db: 0,
        user: None,
        password: None,
        timeout: None,
        fallback: None,
    };
    for (name, value) in parameters(query) {
        if both_forms(&mut server, name, value)? {
            continue;
        }
        match name {
            "db" => server.db = db_number(value)?,
            "password" => server.password = Some(decode(value, "password")?),
            "user" => server.user = Some(decode(value, "user")?),
            _ => {
                return Err(format!(
                    "unknown parameter {name:?} (db, password, user, timeout, fallback)"
                ))
            }
        }
    }
    Ok(server)
}

fn db_number(s: &str) -> Result<u32, String> {
    match crate::limits::parse_number(s.as_bytes()).map(u32::try_from) {
        Some(Ok(n)) => Ok(n),
        _ => Err(format!("database {s:?} is not a number")),
    }
}

/// Percent-decoding; `what` names the part, never its value (a password).
fn decode(s: &str, what: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("the {what} holds a % not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_at(host: &str, port: u16) -> Address {
        Address::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn tcp_addresses_read_with_defaults() {
        let s = Server::parse("redis://127.0.0.1").unwrap();
        assert_eq!(
            (s.address, s.db, s.password),
            (tcp_at("127.0.0.1", 6379), 0, None)
        );
        let s = Server::parse("redis://:s%40cret@redis.example:6380/3").unwrap();
        assert_eq!(s.address, tcp_at("redis.example", 6380));
        assert_eq!(
            (s.db, s.password.as_deref(), s.user),
            (3, Some(&b"s@cret"[..]), None)
        );
        let s = Server::parse("redis://mail:pw@[::1]:7000/1").unwrap();
        assert_eq!(s.address, tcp_at("::1", 7000));
        assert_eq!(s.user.as_deref(), Some(&b"mail"[..]));
    }

    #[test]
    fn unix_addresses_take_db_and_password() {
        let s = Server::parse("unix:///run/redis/redis.sock?db=2&password=a%26b").unwrap();
        assert_eq!(s.address, Address::Unix("/run/redis/redis.sock".into()));
        assert_eq!((s.db, s.password.as_deref()), (2, Some(&b"a&b"[..])));
        let s = Server::parse("unix:///r.sock?timeout=250").unwrap();
        assert_eq!(s.timeout, Some(Duration::from_millis(250)));
        let s = Server::parse("unix:///r.sock?fallback=3").unwrap();
        assert_eq!((s.fallback, s.timeout), (Some(3), None));
        let s = Server::parse("redis://h/4?timeout=100&fallback=2").unwrap();
        assert_eq!(s.fallback, Some(2));
        let s = Server::parse("redis://h/4?timeout=100").unwrap();
        assert_eq!((s.db, s.timeout), (4, Some(Duration::from_millis(100))));
    }

    #[test]
    fn bad_addresses_say_what_is_wrong_and_never_show_the_password() {
        for (url, says) in [
            ("rediss://h:6379", "TLS"),
            ("http://h", "not a redis://"),
            ("redis://h:99999", "port"),
            ("redis://h:6379/x", "database"),
            ("redis://:pw@", "no host"),
            ("unix://run/x", "absolute"),
            ("unix:///x?dbb=1", "unknown parameter"),
            ("redis://:hunter%zz2@h", "password holds a %"),
            ("redis://h/0?timeout=0", "timeout"),
            ("redis://h/0?fallback=0", "fallback"),
            ("unix:///x?fallback=many", "fallback"),
            ("unix:///x?timeout=soon", "timeout"),
        ] {
            let e = Server::parse(url).unwrap_err().to_string();
            assert!(
                e.starts_with("OVERLIMIT_REDIS: ") && e.contains(says),
                "{url}: {e}"
            );
            assert!(!e.contains("hunter"), "{e}");
        }
        let s = Server::parse("redis://:topsecret@h/1").unwrap();
        assert!(!format!("{s:?} {}", s.shown()).contains("topsecret"));
    }
}

//! One connection to the server, every step of it bounded by one deadline.
//!
//! The plug-in has 1 s for everything (see `time.rs`), and qmail-smtpd waits
//! on it with no timeout of its own: a server that is stopped, gone or slow
//! must turn into an error before the deadline, at every step. So the name
//! is resolved in a thread the caller stops waiting for, the connect is
//! bounded (`connect_timeout` for TCP; for a unix socket `SO_SNDTIMEO`,
//! which bounds a connect to a full backlog), and every read and write gets
//! the time that is left as its socket timeout (set again only when a few
//! milliseconds have passed, so that a short exchange pays two `setsockopt`
//! calls, not two per read and write, and still ends by the deadline).
//!
//! Commands whose answer nobody waits for (`AUTH`, `SELECT` after connecting,
//! `UNWATCH` after a decision that changed nothing) are deferred: they go
//! out in front of the next command and their replies are checked first,
//! so they cost no round trip of their own. The plug-in, which closes the
//! connection after its one decision, never sends the `UNWATCH` at all.

use super::resp::{self, Reply, Source};
use super::url::{Address, Server};
use crate::error::Internal;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The longest reply line read (a status, an error, a length).
const MAX_LINE: usize = 4096;
/// How long socket timeouts, once set, serve before they are set again;
/// they are set this much short of the deadline, so no call outlasts it.
const REARM: Duration = Duration::from_millis(10);

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    deadline: Instant,
    /// The server as messages name it (no password).
    shown: String,
    /// A read or write failed: the server is gone or stuck.
    broken: bool,
    /// Encoded commands to send in front of the next ones, and their names
    /// (their replies are read first; an error reply is an error).
    deferred: Vec<u8>,
    deferred_names: Vec<&'static str>,
    /// When the socket timeouts were last set to the deadline less
    /// `REARM`; `None` when they must be set before the next call.
    armed: Option<Instant>,
}

impl Conn {
    /// Connects, authenticates and selects the database, all by `deadline`
    /// (or sooner, by the address's `timeout`); if there are any, a `PING`
    /// makes the server answer the deferred `AUTH` and `SELECT` now.
    pub fn open(server: &Server, deadline: Instant) -> Result<Conn, Internal> {
        let mut conn = Conn::connect(server, deadline)?;
        conn.hello(server);
        if !conn.deferred.is_empty() {
            conn.call(&[b"PING"])?;
        }
        Ok(conn)
    }

    /// Only the socket, by `deadline`: a failure here means the server
    /// cannot be reached (refused, absent, or no answer in time), which the
    /// outage fallback tells apart from a server that answers wrongly.
    pub fn connect(server: &Server, deadline: Instant) -> Result<Conn, Internal> {
        let deadline = server.deadline(deadline);
        let shown = server.shown();
        let failed = |what: String| Internal::other(format!("redis {shown}: {what}"));
        let stream = match &server.address {
            Address::Unix(path) => connect_unix(path, deadline)
                .map(Stream::Unix)
                .map_err(|e| failed(format!("connect: {}", timed(e))))?,
            Address::Tcp { host, port } => connect_tcp(host, *port, deadline)
                .map(Stream::Tcp)
                .map_err(|e| failed(format!("connect: {}", timed(e))))?,
        };
        Ok(Conn {
            stream,
            buf: vec![0; 4096],
            start: 0,
            end: 0,
            deadline,
            shown,
            broken: false,
            deferred: Vec::new(),
            deferred_names: Vec::new(),
            armed: None,
        })
    }

    /// `AUTH` and `SELECT` as the address asks, deferred: sent with the
    /// first command, whose round trip then answers them too. That first
    /// command is always a read (`WATCH`/`MGET`, `SCAN`, `GET`): had
    /// `SELECT` failed, it ran in database 0, where nothing may be written.
    pub fn hello(&mut self, server: &Server) {
        if let Some(pw) = &server.password {
            match &server.user {
                Some(u) => self.defer("AUTH", &[b"AUTH", u, pw]),
                None => self.defer("AUTH", &[b"AUTH", pw]),
            }
        }
        if server.db != 0 {
            let db = server.db.to_string();
            self.defer("SELECT", &[b"SELECT", db.as_bytes()]);
        }
    }

    /// Sends `args` in front of the next command; its reply is checked then.
    pub fn defer(&mut self, name: &'static str, args: &[&[u8]]) {
        resp::encode(&mut self.deferred, args);
        self.deferred_names.push(name);
    }

    /// Whether the connection itself failed (no answer in time, closed,
    /// reset), as opposed to an answer that was wrong.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Moves the deadline (a long-lived connection, one per request).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.armed = None;
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// An error naming the server.
    pub fn error(&self, what: &str) -> Internal {
        Internal::other(format!("redis {}: {what}", self.shown))
    }

    /// Sends one command and reads its reply; an error reply is an error.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply, Internal> {
        let mut replies = self.pipeline(&[args.to_vec()])?;
        match replies.pop() {
            Some(Reply::Error(e)) => {
                Err(self.error(&format!("{}: {e}", String::from_utf8_lossy(args[0]))))
            }
            Some(r) => Ok(r),
            None => Err(self.error("no reply")),
        }
    }

    /// Sends `cmds` in one write and reads one reply for each, error replies
    /// included: one round trip however many commands (and any deferred
    /// ones in front, whose error replies are errors).
    pub fn pipeline(&mut self, cmds: &[Vec<&[u8]>]) -> Result<Vec<Reply>, Internal> {
        let mut out = std::mem::take(&mut self.deferred);
        let deferred = std::mem::take(&mut self.deferred_names);
        for c in cmds {
            resp::encode(&mut out, c);
        }
        if let Err(e) = self.send(&out) {
            self.broken = true;
            return Err(self.error(&format!("write: {}", timed(e))));
        }
        let mut failed = None;
        for name in deferred {
            let reply = resp::read(self).map_err(|e| self.error(&e))?;
            if let (Reply::Error(e), None) = (reply, &failed) {
                // AUTH's error never repeats the password; say which step.
                failed = Some(self.error(&format!("{name}: {e}")));
            }
        }
        let mut replies = Vec::with_capacity(cmds.len());
        for _ in cmds {
            replies.push(resp::read(self).map_err(|e| self.error(&e))?);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(replies),
        }
    }

    /// Sets both socket timeouts so that a call started within `REARM`
    /// from now ends by the deadline; unless they were set so already.
    fn arm(&mut self) -> io::Result<()> {
        let now = Instant::now();
        if self.armed.is_some_and(|at| now < at + REARM) {
            return Ok(());
        }
        let left = left(self.deadline)?;
        // Close to the deadline, the whole rest, set again every call.
        let (timeout, armed) = match left.checked_sub(REARM) {
            Some(t) if t > REARM => (t, Some(now)),
            _ => (left, None),
        };
        match &self.stream {
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
            }
        }
        self.armed = armed;
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.arm()?;
        match &mut self.stream {
            Stream::Unix(s) => s.write_all(bytes),
            Stream::Tcp(s) => s.write_all(bytes),
        }
    }

    /// Reads more into the buffer, within the deadline.
    fn fill(&mut self) -> Result<(), String> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let got = self.arm().and_then(|()| match &mut self.stream {
            Stream::Unix(s) => s.read(&mut self.buf[self.end..]),
            Stream::Tcp(s) => s.read(&mut self.buf[self.end..]),
        });
        if !matches!(&got, Ok(n) if *n > 0)
            && !matches!(&got, Err(e) if e.kind() == io::ErrorKind::Interrupted)
        {
            self.broken = true;
        }
        match got {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(format!("read: {}", timed(e))),
        }
    }
}

impl Source for Conn {
    fn line(&mut self) -> Result<Vec<u8>, String> {
        // Bytes after `start` already searched; the last one may be the CR
        // of a CRLF split between two reads.
        let mut searched = 0;
        loop {
            let have = &self.buf[self.start..self.end];
            if let Some(i) = have[searched..].windows(2).position(|w| w == b"\r\n") {
                let line = have[..searched + i].to_vec();
                self.start += searched + i + 2;
                return Ok(line);
            }
            if have.len() > MAX_LINE {
                return Err(format!("a reply line longer than {MAX_LINE} bytes"));
            }
            searched = have.len().saturating_sub(1);
            self.fill()?;
        }
    }

    fn block(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.end - self.start < n + 2 {
            if self.buf.len() < n + 2 {
                self.buf.resize(n + 2, 0);
            }
            self.fill()?;
        }
        let b = self.buf[self.start..self.start + n].to_vec();
        if &self.buf[self.start + n..self.start + n + 2] != b"\r\n" {
            return Err("a bulk string not ended by CRLF".into());
        }
        self.start += n + 2;
        Ok(b)
    }
}

/// The time left until `deadline`, or a timeout error when none is.
fn left(deadline: Instant) -> io::Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(d)
}

/// Says what a socket error means here: timeouts report `WouldBlock`, and
/// a server gone mid-run shows as a broken pipe or a reset.
fn timed(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "no answer within the deadline".into()
        }
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
            format!("the server closed the connection ({e})")
        }
        _ => e.to_string(),
    }
}

fn connect_unix(path: &std::path::Path, deadline: Instant) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::{AsRawFd, FromRawFd};
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long or holding a NUL byte",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain system call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; the stream closes it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // For AF_UNIX the send timeout also bounds a connect that waits for
    // room in a stopped server's backlog.
    stream.set_write_timeout(Some(left(deadline)?))?;
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a filled sockaddr_un and `len` within its size.
    let r = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => io::ErrorKind::TimedOut.into(),
            _ => e,
        });
    }
    Ok(stream)
}

fn connect_tcp(host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let addrs = resolve(host, port, deadline)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, left(deadline)?) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// An address literal at once; a name through the resolver, in a thread
/// this process stops waiting for at the deadline (getaddrinfo has none).
fn resolve(host: &str, port: u16, deadline: Instant) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = (host.to_string(), port);
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(Iterator::collect));
        })?;
    rx.recv_timeout(left(deadline)?)
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

//! The daemon: `--listen unix:PATH` or `--listen inet:HOST:PORT`, one thread
//! per connection (smtpd holds a connection per smtpd process and sends one
//! request at a time on it, so a blocking thread each is the simplest shape
//! that keeps every core busy; measured in scripts/bench-policy.sh).
//!
//! SIGTERM (or SIGINT) ends it cleanly: the listening socket is closed and a
//! unix socket removed, so no new connection is taken; every connection's
//! reading side is shut, so a thread waiting for a request sees the end while
//! a thread answering one finishes and sends its answer; then it exits 0.

use super::decide::Settings;
use super::serve;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// More connections than this at once are closed at accept: each one is a
/// thread. Postfix opens one per smtpd process (default_process_limit 100).
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a stopping daemon waits for answers in progress.
const DRAIN: Duration = Duration::from_secs(5);

/// A connection thread needs little: buffers are on the heap.
const STACK: usize = 256 * 1024;

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Inet(String, u16),
}

impl Address {
    /// `unix:PATH`, `inet:HOST:PORT` (an IPv6 HOST in brackets: `inet:[::1]:PORT`).
    pub fn parse(text: &str) -> Result<Address, String> {
        let bad = |why: &str| format!("--listen {text}: {why}");
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("no socket path"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let Some(rest) = text.strip_prefix("inet:") else {
            return Err(bad("use unix:PATH or inet:HOST:PORT"));
        };
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(bad("no port (inet:HOST:PORT)"));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number up to 65535"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("no host (inet:HOST:PORT)"));
        }
        Ok(Address::Inet(host.to_string(), port))
    }
}

/// The write end of the pipe the signal handler wakes the accept loop with.
static WAKE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = WAKE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored
        // so the interrupted code sees its own.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, b"x".as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Opens a pipe and routes SIGTERM and SIGINT to it; returns the read end.
fn stop_signals() -> io::Result<RawFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    WAKE.store(fds[1], Ordering::Relaxed);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installing a handler that only calls write(2); the zeroed
        // sigaction has an empty mask. SA_RESTART keeps the connection
        // threads' reads and writes going when the signal lands on them.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(fds[0])
}

/// The connections being served, by number, with their descriptors, so a
/// stop can shut their reading sides. A thread removes itself before its
/// socket closes, under the lock, so no descriptor here is ever stale.
#[derive(Default)]
struct Live {
    connections: Mutex<HashMap<u64, RawFd>>,
    ended: Condvar,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, RawFd>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The bound socket.
enum Listener {
    Unix(UnixListener, PathBuf, (u64, u64)),
    Inet(TcpListener),
}

/// Serves `address` until SIGTERM; `Err` names what could not be set up.
pub fn run(address: &Address, settings: Settings) -> Result<(), String> {
    let listener = bind(address)?;
    let wake = stop_signals().map_err(|e| format!("cannot set up SIGTERM handling: {e}"))?;
    let settings = Arc::new(settings);
    let live = Arc::new(Live::default());
    let listening_fd = match &listener {
        Listener::Unix(l, ..) => l.as_raw_fd(),
        Listener::Inet(l) => l.as_raw_fd(),
    };
    let mut next = 0u64;
    while wait_readable(listening_fd, wake) {
        let accepted = match &listener {
            Listener::Unix(l, ..) => l.accept().map(|(s, _)| spawn(s, next, &live, &settings)),
            Listener::Inet(l) => l.accept().map(|(s, _)| {
                // One small reply per request: never wait for more to send.
                let _ = s.set_nodelay(true);
                spawn(s, next, &live, &settings)
            }),
        };
        next += 1;
        match accepted {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors, most likely: slow down rather than spin.
                settings.logger.line(&format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    stop(listener, &live, &settings);
    Ok(())
}

/// Binds and listens. A unix socket is created mode 0660 (give its group to
/// Postfix); a stale socket left by a killed daemon is replaced, a live one
/// or any other file at the path is an error.
fn bind(address: &Address) -> Result<Listener, String> {
    let listener = match address {
        Address::Inet(host, port) => {
            let l = TcpListener::bind((host.as_str(), *port))
                .map_err(|e| format!("cannot listen on inet:{host}:{port}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Listener::Inet(l)
        }
        Address::Unix(path) => {
            remove_stale(path)?;
            // SAFETY: umask only changes this process's file-creation mask;
            // no other thread runs yet. It makes the socket 0660 from birth.
            let old = unsafe { libc::umask(0o117) };
            let bound = UnixListener::bind(path);
            // SAFETY: as above, restoring the mask.
            unsafe { libc::umask(old) };
            let l = bound.map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Listener::Unix(l, path.clone(), (m.dev(), m.ino()))
        }
    };
    Ok(listener)
}

/// Removes a socket at `path` that no one listens on any more.
fn remove_stale(path: &Path) -> Result<(), String> {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !m.file_type().is_socket() {
        return Err(format!(
            "--listen unix:{}: exists and is not a socket; not replaced",
            path.display()
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "--listen unix:{}: another server is listening there",
            path.display()
        ));
    }
    std::fs::remove_file(path).map_err(|e| format!("remove stale {}: {e}", path.display()))
}

/// Waits until a connection is waiting (true) or a stop signal came (false).
fn wait_readable(listening: RawFd, wake: RawFd) -> bool {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listening,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll reads and writes the two pollfd entries we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue; // EINTR: the handler wrote to the pipe, seen next round.
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents != 0 {
            return true;
        }
    }
}

/// Serves `stream` on a thread of its own, or closes it when too many are
/// open already.
fn spawn<S>(stream: S, id: u64, live: &Arc<Live>, settings: &Arc<Settings>)
where
    S: AsRawFd + Send + 'static,
    for<'a> &'a S: Read + Write,
{
    {
        let mut connections = live.lock();
        if connections.len() >= MAX_CONNECTIONS {
            drop(connections);
            settings.logger.line(&format!(
                "more than {MAX_CONNECTIONS} connections at once; one closed unanswered"
            ));
            return;
        }
        connections.insert(id, stream.as_raw_fd());
    }
    let logger = settings.logger;
    let (thread_live, settings) = (Arc::clone(live), Arc::clone(settings));
    let started = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let live = thread_live;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve::connection(&stream, &stream, &settings)
            }));
            let mut connections = live.lock();
            connections.remove(&id);
            drop(stream);
            live.ended.notify_all();
        });
    if let Err(e) = started {
        live.lock().remove(&id);
        // The stream moved into the closure that failed to start and was
        // dropped with it: the connection is closed.
        logger.line(&format!("cannot start a thread: {e}"));
    }
}

/// Stops accepting, lets answers in progress finish, and removes the socket.
fn stop(listener: Listener, live: &Live, settings: &Settings) {
    if let Listener::Unix(l, path, (dev, ino)) = listener {
        drop(l);
        // Only our own socket: a new daemon may already have replaced it.
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    }
    let mut connections = live.lock();
    for &fd in connections.values() {
        // SAFETY: every descriptor in the map is open: its thread removes it
        // under this lock before closing it.
        unsafe { libc::shutdown(fd, libc::SHUT_RD) };
    }
    let deadline = Instant::now() + DRAIN;
    while !connections.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            settings.logger.line(&format!(
                "stopping with {} connections still busy",
                connections.len()
            ));
            return;
        }
        connections = live
            .ended
            .wait_timeout(connections, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

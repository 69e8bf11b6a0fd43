//! A private `redis-server` for one test: its own config file, data
//! directory and unix socket inside a fresh directory the test gives it, no
//! TCP port; when dropped, stopped (continued first, if the test stopped
//! it) and its directory removed. The system's service, if any, is never
//! touched.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REDIS_SERVER: &str = "redis-server";

pub struct RedisServer {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Child,
    config: PathBuf,
}

/// How the server is configured beyond the defaults.
#[derive(Clone, Default)]
pub struct Options {
    /// `requirepass`.
    pub password: Option<String>,
    /// An append-only file, fsynced on every write, so a restart keeps
    /// every count.
    pub persistent: bool,
}

impl RedisServer {
    /// Starts a server in `dir`, a fresh directory that becomes the
    /// server's, or `None` (and `dir` removed) when `redis-server` is not
    /// installed: the caller skips, or fails under CI.
    pub fn start(dir: &Path, options: Options) -> Option<RedisServer> {
        if Command::new(REDIS_SERVER)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            let _ = std::fs::remove_dir_all(dir);
            return None;
        }
        let socket = dir.join("redis.sock");
        let config = dir.join("redis.conf");
        let mut text = format!(
            "port 0\nunixsocket {}\nunixsocketperm 700\ndir {}\nlogfile {}\n\
             daemonize no\nsave \"\"\nprotected-mode yes\ndatabases 16\n",
            socket.display(),
            dir.display(),
            dir.join("redis.log").display(),
        );
        if let Some(pw) = &options.password {
            text.push_str(&format!("requirepass {pw}\n"));
        }
        text.push_str(if options.persistent {
            "appendonly yes\nappendfsync always\n"
        } else {
            "appendonly no\n"
        });
        std::fs::write(&config, text).unwrap();
        let child = spawn(&config);
        let server = RedisServer {
            dir: dir.to_path_buf(),
            socket,
            child,
            config,
        };
        server.wait_ready();
        Some(server)
    }

    /// `unix://` URL of the server, with `extra` parameters (`db=1&...`).
    pub fn url(&self, extra: &str) -> String {
        let sep = if extra.is_empty() { "" } else { "?" };
        format!("unix://{}{sep}{extra}", self.socket.display())
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGSTOP: the server keeps its socket and answers nothing.
    pub fn freeze(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.pid(), libc::SIGSTOP);
        }
    }

    pub fn thaw(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.pid(), libc::SIGCONT);
        }
    }

    /// SIGKILL: gone without a goodbye, mid-run.
    pub fn kill(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server cleanly and starts it again on the same files.
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.socket);
        self.child = spawn(&self.config);
        self.wait_ready();
    }

    fn stop(&mut self) {
        // A server already reaped (`kill`) is not signalled again: its pid
        // may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.thaw();
        signal(self.pid(), libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }

    /// One raw command's reply, for checks independent of the client under
    /// test (`PTTL k`, `DBSIZE`).
    pub fn raw(&self, command: &str) -> String {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(mut s) = UnixStream::connect(&self.socket) {
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut buf = [0u8; 64];
                if s.write_all(b"PING\r\n").is_ok() {
                    if let Ok(n) = s.read(&mut buf) {
                        // Either PONG, or NOAUTH when a password is set:
                        // both mean it is serving.
                        if n > 0 && !buf[..n].starts_with(b"-LOADING") {
                            return;
                        }
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not come up; see {}",
                self.dir.join("redis.log").display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(config: &Path) -> Child {
    Command::new(REDIS_SERVER)
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server")
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: a plain kill(2) of our own child.
    unsafe {
        libc::kill(pid, sig);
    }
}

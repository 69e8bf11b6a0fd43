//! Talking to overlimit-policy the way Postfix's smtpd does: requests of
//! `name=value` lines, replies read to their empty line; the program run in
//! spawn mode (one connection on stdin/stdout) or as a daemon on a socket.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const POLICY: &str = env!("CARGO_BIN_EXE_overlimit-policy");

/// No answer, start or stop may take longer: a hang fails the test.
pub const HANG: Duration = Duration::from_secs(20);

/// A request as smtpd 3.7 sends it, with the attributes that matter here set
/// and a few others around them, as a real request has.
pub fn request(state: &str, sasl_username: &str, client_address: &str, recipient: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state={state}\nprotocol_name=ESMTP\n\
         helo_name=client.example\nqueue_id=\nsender=from@example.com\n\
         recipient={recipient}\nrecipient_count=0\nclient_address={client_address}\n\
         client_name=unknown\nreverse_client_name=unknown\ninstance=1f2.6543a1b2.9c3d.0\n\
         sasl_method={}\nsasl_username={sasl_username}\nsasl_sender=\nsize=0\n\
         ccert_subject=\nencryption_protocol=\nstress=\nclient_port=40000\n\
         policy_context=\nserver_address=127.0.0.1\nserver_port=25\n\
         compatibility_level=3.6\nmail_version=3.7.11\n\n",
        if sasl_username.is_empty() {
            ""
        } else {
            "PLAIN"
        }
    )
}

/// A RCPT request from an authenticated user.
pub fn rcpt(user: &str) -> String {
    request("RCPT", user, "192.0.2.10", "someone@remote.example")
}

/// One policy client connection over any stream.
pub struct Peer<S: Read + Write> {
    reader: BufReader<S>,
}

impl<S: Read + Write> Peer<S> {
    pub fn new(stream: S) -> Peer<S> {
        Peer {
            reader: BufReader::new(stream),
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one reply: the `action=` value, or `None` if the server closed
    /// the connection instead. A reply of any other shape fails the test.
    pub fn reply(&mut self) -> Option<String> {
        let mut first = String::new();
        match self.reader.read_line(&mut first) {
            Ok(0) => return None,
            Ok(_) => {}
            // The server reset the connection: closed, too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a reply: {e}"),
        }
        let mut empty = String::new();
        self.reader.read_line(&mut empty).unwrap();
        assert_eq!(
            empty, "\n",
            "a reply is one line and an empty line: {first:?}"
        );
        let action = first
            .strip_prefix("action=")
            .and_then(|a| a.strip_suffix('\n'));
        Some(
            action
                .unwrap_or_else(|| panic!("not a reply: {first:?}"))
                .to_string(),
        )
    }

    /// Sends a request and reads its reply.
    pub fn ask(&mut self, request: &str) -> Option<String> {
        self.send(request.as_bytes());
        self.reply()
    }

    pub fn stream(&mut self) -> &mut S {
        self.reader.get_mut()
    }
}

impl Peer<UnixStream> {
    pub fn unix(path: &Path) -> Peer<UnixStream> {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(HANG)).unwrap();
        Peer::new(s)
    }
}

/// What a finished run left.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// The program with a cleared environment and `env`.
pub fn command(env: &[(OsString, OsString)], args: &[&str]) -> Command {
    let mut c = Command::new(POLICY);
    c.env_clear().args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Output read while a program runs, so that a full pipe never stalls it.
pub struct Drained {
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Drained {
    pub fn from(child: &mut Child) -> Drained {
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut b = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut b);
                }
                String::from_utf8_lossy(&b).into_owned()
            })
        };
        Drained {
            stdout: drain(
                child
                    .stdout
                    .take()
                    .map(|o| Box::new(o) as Box<dyn Read + Send>),
            ),
            stderr: drain(
                child
                    .stderr
                    .take()
                    .map(|e| Box::new(e) as Box<dyn Read + Send>),
            ),
        }
    }
}

/// Waits for `child` at most `HANG`, killing it on a hang (which fails).
pub fn finish(mut child: Child, started: Instant) -> Finished {
    let drained = Drained::from(&mut child);
    finish_drained(child, drained, started)
}

fn finish_drained(mut child: Child, drained: Drained, started: Instant) -> Finished {
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "overlimit-policy hung; stderr: {}",
                drained.stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), None, "killed by a signal");
    Finished {
        code: status.code(),
        stdout: drained.stdout.join().unwrap(),
        stderr: drained.stderr.join().unwrap(),
        elapsed: started.elapsed(),
    }
}

/// Spawn mode: `input` on stdin, then end of input; stdout and stderr kept.
pub fn spawn_mode(env: &[(OsString, OsString)], input: &[u8]) -> Finished {
    let started = Instant::now();
    let mut child = command(env, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from a thread: a server that stops reading must not block us.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    finish(child, started)
}

/// The `action=` values of a spawn-mode run's stdout, in order.
pub fn actions(stdout: &str) -> Vec<String> {
    stdout
        .split("\n\n")
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.strip_prefix("action=")
                .unwrap_or_else(|| panic!("not a reply: {r:?}"))
                .to_string()
        })
        .collect()
}

/// A daemon on `--listen ADDRESS`, killed if the test ends without `stop`.
pub struct Daemon {
    child: Option<(Child, Drained)>,
    started: Instant,
}

impl Daemon {
    /// Starts it and waits until `ready` says it accepts connections.
    pub fn start(mut cmd: Command, ready: impl Fn() -> bool) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let drained = Drained::from(&mut child);
        let mut d = Daemon {
            child: Some((child, drained)),
            started: Instant::now(),
        };
        while !ready() {
            if d.child.as_mut().unwrap().0.try_wait().unwrap().is_some() {
                let (child, drained) = d.child.take().unwrap();
                let f = finish_drained(child, drained, d.started);
                panic!("the daemon exited with {:?}: {}", f.code, f.stderr);
            }
            assert!(d.started.elapsed() < HANG, "the daemon never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// `--listen unix:PATH` with `env`.
    pub fn unix(env: &[(OsString, OsString)], path: &Path) -> Daemon {
        let address = format!("unix:{}", path.display());
        let path = path.to_path_buf();
        Daemon::start(command(env, &["--listen", &address]), move || {
            UnixStream::connect(&path).is_ok()
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().0.id() as i32
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> Finished {
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let started = Instant::now();
        let (child, drained) = self.child.take().unwrap();
        let mut f = finish_drained(child, drained, self.started);
        f.elapsed = started.elapsed();
        f
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some((mut c, _)) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fresh path for a socket in `dir`.
pub fn socket_in(dir: &Path) -> PathBuf {
    dir.join("policy.sock")
}

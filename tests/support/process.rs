//! Running a test's program to its end, boundedly, for the harnesses whose
//! programs tests/common's `Run` cannot start (a command through the jail's
//! nsenter, fed a message; a daemon stopped by a signal later): its output
//! read while it runs, so that a full pipe never stalls it; its input
//! written from a thread, so that a program that stops reading cannot block
//! the test; a hang killed, and failed.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// No program may take longer: a hang fails the test.
pub const HANG: Duration = Duration::from_secs(30);

/// What a finished run left.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; `None` if a signal ended the process.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Output read while a program runs.
pub struct Drained {
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Drained {
    /// Takes `child`'s piped stdout and stderr (either may be absent).
    pub fn from(child: &mut Child) -> Drained {
        fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
            std::thread::spawn(move || {
                let mut b = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut b);
                }
                String::from_utf8_lossy(&b).into_owned()
            })
        }
        Drained {
            stdout: drain(child.stdout.take()),
            stderr: drain(child.stderr.take()),
        }
    }
}

/// Waits for `child`, started at `started`, at most `HANG`, reading its
/// output meanwhile.
pub fn finish(mut child: Child, started: Instant) -> Finished {
    let drained = Drained::from(&mut child);
    finish_drained(child, drained, started)
}

/// `finish` for a child whose output is already being read. A hang is
/// killed and fails the test, with what the program said on stderr if its
/// pipe closed with it (a grandchild may still hold it: then not, rather
/// than a test that hangs).
pub fn finish_drained(mut child: Child, drained: Drained, started: Instant) -> Finished {
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            let killed = Instant::now();
            while !drained.stderr.is_finished() && killed.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let stderr = match drained.stderr.is_finished() {
                true => drained.stderr.join().unwrap(),
                false => "(still open)".into(),
            };
            panic!("hung for {HANG:?}; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Finished {
        code: status.code(),
        signal: status.signal(),
        stdout: drained.stdout.join().unwrap(),
        stderr: drained.stderr.join().unwrap(),
        elapsed: started.elapsed(),
    }
}

/// Runs `cmd` with `input` on stdin, then end of input; stdout and stderr
/// kept.
pub fn feed(mut cmd: Command, input: &[u8]) -> Finished {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    finish(child, started)
}

//! `overlimit-notify`: the shipped `OVERLIMIT_NOTIFY` program. The plug-in
//! and the policy service run it once per episode (a limit of a client first
//! has no room) as `overlimit-notify CLIENT LIMIT COUNT ROOM_AT`; it mails
//! the administrator through the local sendmail.
//!
//! It is itself rate-limited, so a thousand stolen passwords do not become a
//! thousand mails: at most `OVERLIMIT_NOTIFY_MAX` mails an hour in all, the
//! times of those sent kept in a state file it owns (under a lock, so that
//! notifiers running at once share one budget); what is held back is
//! counted and named in the next mail that goes. Its caller does not wait
//! for it, and it waits for sendmail a bounded time only.

use overlimit::client::printable;
use overlimit::config::Config;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NAME: &str = "overlimit-notify";

const USAGE: &str = "usage: overlimit-notify CLIENT LIMIT COUNT ROOM_AT

Run by rcptcheck-overlimit and overlimit-policy as OVERLIMIT_NOTIFY: mails
OVERLIMIT_NOTIFY_TO (default root) through OVERLIMIT_NOTIFY_SENDMAIL (default
/usr/sbin/sendmail), at most OVERLIMIT_NOTIFY_MAX mails an hour (default 10),
the sent ones recorded in OVERLIMIT_NOTIFY_STATE (default OVERLIMITDIR/.notify).
Exit 0 mailed or held back by the hourly cap, 1 sendmail failed, 2 usage
error or a state file that cannot be used. See overlimit-notify(8).";

/// Exit codes (overlimit-notify(8), EXIT CODES).
const DONE: i32 = 0;
const NOT_SENT: i32 = 1;
const TROUBLE: i32 = 2;

const HOUR: u64 = 3600;
const DEFAULT_MAX: u64 = 10;
/// How long sendmail may take before it is killed.
const SENDMAIL_WAIT: Duration = Duration::from_secs(30);
/// How long to wait for another notifier's lock on the state file.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// The state file holds at most this: one time per mail of the last hour.
const STATE_LIMIT: u64 = 64 * 1024;

fn main() {
    std::process::exit(run(std::env::args_os().skip(1).collect()))
}

fn run(args: Vec<OsString>) -> i32 {
    match args.first().map(|a| a.as_bytes()) {
        Some(b"-h" | b"--help") => {
            println!("{USAGE}");
            return DONE;
        }
        Some(b"-V" | b"--version") => {
            println!("{NAME} {}", env!("CARGO_PKG_VERSION"));
            return DONE;
        }
        _ => {}
    }
    let [client, limit, count, room_at] = args.as_slice() else {
        eprintln!("{NAME}: expected 4 arguments, got {}\n{USAGE}", args.len());
        return TROUBLE;
    };
    let max = match std::env::var("OVERLIMIT_NOTIFY_MAX") {
        Err(_) => DEFAULT_MAX,
        Ok(v) => match v.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("{NAME}: OVERLIMIT_NOTIFY_MAX={v}: not a number");
                return TROUBLE;
            }
        },
    };
    let state = env_path("OVERLIMIT_NOTIFY_STATE")
        .unwrap_or_else(|| Config::from_env().dir.join(".notify"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let held_back = match take_turn(&state, max, now) {
        Ok(Some(held)) => held,
        Ok(None) => {
            eprintln!(
                "{NAME}: {} over {}: not mailed, {max} mails sent in the last hour already",
                show(client),
                show(limit)
            );
            return DONE;
        }
        Err(e) => {
            eprintln!("{NAME}: {}: {e}", state.display());
            return TROUBLE;
        }
    };
    let to = std::env::var_os("OVERLIMIT_NOTIFY_TO").unwrap_or_else(|| "root".into());
    let sendmail =
        env_path("OVERLIMIT_NOTIFY_SENDMAIL").unwrap_or_else(|| "/usr/sbin/sendmail".into());
    let text = message(
        &to,
        [client, limit, count, room_at].map(|a| show(a)),
        now,
        held_back,
    );
    match send(&sendmail, &to, text.as_bytes()) {
        Ok(()) => {
            eprintln!("{NAME}: mailed {} about {}", show(&to), show(client));
            DONE
        }
        Err(e) => {
            eprintln!("{NAME}: {}: {e}", sendmail.display());
            NOT_SENT
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// An argument as safe text: no byte of it can end a header line.
fn show(arg: &OsStr) -> String {
    printable(arg.as_bytes())
}

/// Under the state file's lock: drops the times older than an hour, and if
/// fewer than `max` remain, records `now` and returns how many mails were
/// held back since the last one sent (`None`: this one is held back too).
fn take_turn(path: &Path, max: u64, now: u64) -> std::io::Result<Option<u64>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    lock(&file)?;
    let mut text = String::new();
    (&file).take(STATE_LIMIT).read_to_string(&mut text)?;
    let mut sent: Vec<u64> = Vec::new();
    let mut held: u64 = 0;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("sent", t)) => sent.extend(t.parse::<u64>().ok()),
            Some(("held", n)) => held = n.parse().unwrap_or(0),
            _ => {} // A damaged line is dropped: the file is rewritten below.
        }
    }
    sent.retain(|&t| t <= now && now - t < HOUR);
    let turn = (sent.len() as u64) < max;
    if turn {
        sent.push(now);
    }
    let mut new = String::new();
    for t in &sent {
        new.push_str(&format!("sent {t}\n"));
    }
    new.push_str(&format!("held {}\n", if turn { 0 } else { held + 1 }));
    file.rewind()?;
    file.set_len(0)?;
    file.write_all(new.as_bytes())?;
    Ok(turn.then_some(held))
}

/// An exclusive flock, waiting `LOCK_WAIT` at most.
fn lock(file: &File) -> std::io::Result<()> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor we own, non-blocking.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) || Instant::now() > deadline {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mail: headers from safe text only, a body an administrator can act on.
fn message(
    to: &OsStr,
    [client, limit, count, room_at]: [String; 4],
    now: u64,
    held: u64,
) -> String {
    let room = match room_at.parse::<u64>() {
        Ok(t) => format!(
            "Room frees up in about {} minute(s) (Unix time {t}).",
            t.saturating_sub(now).div_ceil(60)
        ),
        Err(_) => "It is a classic count: room frees up at the next overlimit-sweep, \
                   or at once with `overlimit reset CLIENT`."
            .replace("CLIENT", &client),
    };
    let mut body = format!(
        "The client {client} has reached its limit {limit} ({count} recipients counted);\n\
         its further recipients are refused.\n{room}\n\n\
         If the account is compromised, change its password and look at what it sent.\n\
         overlimit status {client} shows its counters.\n"
    );
    if held > 0 {
        body.push_str(&format!(
            "\n{held} other notification(s) were held back by the hourly cap \
             (OVERLIMIT_NOTIFY_MAX); see overlimit status.\n"
        ));
    }
    format!(
        "To: {}\nSubject: overlimit: {client} reached {limit}\nAuto-Submitted: auto-generated\n\n{body}",
        show(to)
    )
}

/// Runs sendmail with the recipient as its one argument and the message on
/// its input, killing it after `SENDMAIL_WAIT`.
fn send(sendmail: &Path, to: &OsStr, text: &[u8]) -> Result<(), String> {
    let mut child = Command::new(sendmail)
        .arg("-i")
        .arg("--")
        .arg(to)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut input = child.stdin.take().ok_or("no input pipe")?;
    let written = input.write_all(text);
    drop(input);
    let deadline = Instant::now() + SENDMAIL_WAIT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {}s", SENDMAIL_WAIT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    written.map_err(|e| format!("writing the message: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("failed: {status}"))
    }
}

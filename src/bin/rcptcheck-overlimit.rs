//! The recipient check qmail-smtpd runs for every accepted RCPT TO
//! (`RCPTCHECK=/var/qmail/bin/rcptcheck-overlimit`, `RCPTCHECKRELAYCLIENT=1`).
//!
//! It reads its environment, looks up the client's limits, counts the
//! recipient and answers with an exit code: 112 (go on), 113 (over the limit)
//! or 111 (internal error with OVERLIMIT_FAILCLOSED). This file is the one
//! place that decides the exit code. It never reads stdin, which is the SMTP
//! client's socket, and never exits any other way, even on a panic.
// Under `cargo test` the test harness supplies `main`; see the C `main` below.
#![cfg_attr(not(test), no_main)]

use overlimit::admit::{self, Admission, Full};
use overlimit::client::{printable, Client};
use overlimit::config::{self, Config};
use overlimit::error::Internal;
use overlimit::limits;
use overlimit::log;
use overlimit::lookup;
use overlimit::store::LOCK_WAIT;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

const NAME: &str = "rcptcheck-overlimit";
const GO_ON: i32 = 112;
const OVER: i32 = 113;
const TEMPFAIL: i32 = 111;

// The C `main` is ours rather than Rust's runtime start-up, which reads
// /proc/self/maps and sets up a signal stack before `main`: measured, that
// was a quarter of the plug-in's cost per recipient. What the runtime would
// have done that matters here is done by hand: SIGPIPE is ignored, so a
// closed log pipe gives a write error and not a signal death.
#[cfg_attr(not(test), no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let started = Instant::now();
    // One log line for a panic, as for any internal error; the exit code is
    // then decided below like any other internal error's.
    std::panic::set_hook(Box::new(|info| {
        let text = format!("internal error: {info}").replace('\n', " ");
        log::line(NAME, &text)
    }));
    std::panic::catch_unwind(|| run(started)).unwrap_or_else(|_| internal_code())
}

fn run(started: Instant) -> i32 {
    // Not a relay client: inbound mail, which is not ours to count. Decided
    // before any file is touched.
    if std::env::var_os("RELAYCLIENT").is_none() {
        return GO_ON;
    }
    // A recipient in rcpthosts is local delivery, not relaying.
    if std::env::var_os("RCPTHOSTS").is_some_and(|v| !v.is_empty()) {
        return GO_ON;
    }
    let config = Config::from_env();
    match check(&config, started) {
        Ok(code) => code,
        Err(e) => {
            let code = internal_code();
            let answer = if code == TEMPFAIL {
                "answering 111"
            } else {
                "recipient passes uncounted"
            };
            log::line(NAME, &format!("internal error, {answer}: {e}"));
            code
        }
    }
}

fn check(config: &Config, started: Instant) -> Result<i32, Internal> {
    let client = client()
        .ok_or_else(|| Internal("no client: neither SMTPAUTHUSER nor TCPREMOTEIP is set".into()))?;
    let mut notes = Vec::new();
    let resolved = lookup::resolve(&config.control, &client, &mut notes);
    for n in &notes {
        log::line(NAME, &format!("{}: {n}", config.control.display()));
    }
    let targets = admit::targets(&client, &resolved?);
    let now = config::now();
    let result = admit::admit(
        &config.dir,
        &targets,
        now,
        started + LOCK_WAIT,
        config.monitor,
    )?;
    for n in &result.notes {
        log::line(NAME, n);
    }
    if result.accepted() {
        return Ok(GO_ON);
    }
    log::line(NAME, &refusal_line(&client, &result, now, config.monitor));
    if let Some(program) = &config.notify {
        notify(program, &result.newly_full);
    }
    if config.monitor {
        return Ok(GO_ON);
    }
    if let Some(code) = config.reply {
        reply(code, &client, &result, now);
    }
    Ok(OVER)
}

/// The authenticated user, else the remote address (TCP6REMOTEIP only where
/// TCPREMOTEIP is missing).
fn client() -> Option<Client> {
    let non_empty = |name| std::env::var_os(name).filter(|v: &OsString| !v.is_empty());
    let name = non_empty("SMTPAUTHUSER")
        .or_else(|| non_empty("SMTP_AUTH_USER"))
        .or_else(|| non_empty("TCPREMOTEIP"))
        .or_else(|| non_empty("TCP6REMOTEIP"))?;
    Client::from_name(name.as_bytes())
}

fn internal_code() -> i32 {
    if config::switch("OVERLIMIT_FAILCLOSED") {
        TEMPFAIL
    } else {
        GO_ON
    }
}

/// `limit 100/1h reached (100 counted, room in 12m)`, naming the domain when
/// it is the domain's shared counter that is full.
fn describe(client: &[u8], f: &Full, now: u64) -> String {
    let room = match f.room_at {
        Some(t) => format!("room in {}", log::duration(t.saturating_sub(now))),
        None => "until reset".to_string(),
    };
    let whose = if f.label == client {
        String::new()
    } else {
        format!("{} ", printable(&f.label))
    };
    format!(
        "{whose}limit {} reached ({} counted, {room})",
        f.item, f.count
    )
}

fn refusal_line(client: &Client, result: &Admission, now: u64, monitor: bool) -> String {
    let what = if monitor {
        "monitor: would refuse"
    } else {
        "refused"
    };
    let name = client.name();
    let limits: Vec<String> = result
        .full
        .iter()
        .map(|f| describe(&name, f, now))
        .collect();
    let rcpt = std::env::var_os("RECIPIENT").unwrap_or_default();
    format!(
        "{what} {}: {}; recipient {}",
        printable(&name),
        limits.join("; "),
        printable(rcpt.as_bytes())
    )
}

/// Writes the SMTP reply on fd 4 (only with a refusal: qmail-smtpd logs any
/// text as a rejection). One line, well under qmail-smtpd's 1,021 bytes.
fn reply(code: u16, client: &Client, result: &Admission, now: u64) {
    if std::env::var_os("USE_FD4").is_none() {
        return;
    }
    let Some(f) = result.full.first() else { return };
    let when = match result.room_at() {
        Some(t) => format!(
            "try again in {}",
            log::duration(t.saturating_sub(now).max(1))
        ),
        None => "ask your provider to lift it".to_string(),
    };
    let per = f.item.period.map_or(String::new(), |p| {
        format!(" per {}", limits::format_period(p))
    });
    // A domain's shared counter is not the sender's own: say whose it is, so
    // the user does not think their own account was cut off.
    let whose = if f.label == client.name() {
        "You reached your".to_string()
    } else {
        let domain = f.label.strip_prefix(b"@").unwrap_or(&f.label);
        format!("Your domain {} reached its", printable(domain))
    };
    let mut text = format!(
        "{code} 4.7.1 {whose} limit of {} recipients{per}; {when}",
        f.item.max
    );
    text.truncate(900);
    // SAFETY: writing a buffer we own to a descriptor number; an fd 4 that is
    // not open just makes write fail with EBADF, which is ignored.
    unsafe {
        libc::write(4, text.as_ptr().cast(), text.len());
    }
}

/// Starts the administrator's program once per newly full limit and does not
/// wait for it. fd 4 is marked close-on-exec first: qmail-smtpd reads it to
/// end of file, so a child holding it would hold up the SMTP reply.
fn notify(program: &OsString, newly_full: &[Full]) {
    // SAFETY: fcntl on a descriptor number; harmless if fd 4 is not open.
    unsafe {
        libc::fcntl(4, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    for f in newly_full {
        let room = f
            .room_at
            .map_or_else(|| "reset".to_string(), |t| t.to_string());
        let spawned = std::process::Command::new(program)
            .arg(OsStr::from_bytes(&f.label))
            .arg(f.item.to_string())
            .arg(f.count.to_string())
            .arg(room)
            .stdin(std::process::Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            log::line(
                NAME,
                &format!(
                    "cannot start OVERLIMIT_NOTIFY {}: {e}",
                    program.to_string_lossy()
                ),
            );
        }
    }
}

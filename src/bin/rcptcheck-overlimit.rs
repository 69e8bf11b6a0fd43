//! The recipient check qmail-smtpd runs for every accepted RCPT TO
//! (`RCPTCHECK=/var/qmail/bin/rcptcheck-overlimit`, `RCPTCHECKRELAYCLIENT=1`).
//!
//! It reads its environment, looks up the client's limits, counts the
//! recipient and answers with an exit code: 112 (go on), 113 (over the limit)
//! or 111 (internal error with OVERLIMIT_FAILCLOSED). This file is the one
//! place that decides the exit code. It never reads stdin, which is the SMTP
//! client's socket, and never exits any other way, even on a panic.
//!
//! qmail-smtpd passes no argument. An administrator may type `--version`
//! or `--help` (exit 0); any other argument is a mistake that reads and
//! counts nothing and answers 111, qmail's "cannot verify", so that a
//! wrapper passing one by mistake fails closed instead of letting mail pass
//! uncounted.
// Under `cargo test` the test harness supplies `main`; see the C `main` below.
#![cfg_attr(not(test), no_main)]

use overlimit::admit::Full;
use overlimit::client::{printable, shown, Client};
use overlimit::config::Config;
use overlimit::decision::{self, Asked};
use overlimit::error::Internal;
use overlimit::log;
use overlimit::lookup;
use overlimit::process::{self, ExitOnOom};
use overlimit::refusal;
use overlimit::store::LOCK_WAIT;
use overlimit::time::Time;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::time::Instant;

const NAME: &str = "rcptcheck-overlimit";
const GO_ON: i32 = 112;
const OVER: i32 = 113;
const TEMPFAIL: i32 = 111;

const USAGE: &str = "usage: rcptcheck-overlimit (qmail-smtpd runs it with no argument)

The recipient check of qmail-smtpd's rcptcheck patch: counts each relayed
recipient for its client (SMTPAUTHUSER, else TCPREMOTEIP) against the
client's limits in RELAYLIMITS, keeping counters in OVERLIMITDIR. Set in the
run script: RCPTCHECK=/var/qmail/bin/rcptcheck-overlimit and
RCPTCHECKRELAYCLIENT=1.

options: -h, --help, -V, --version
exit: 112 go on (accepted, or not ours to count); 113 over the limit;
111 internal error with OVERLIMIT_FAILCLOSED set, or an unknown argument;
0 after --help or --version. See rcptcheck-overlimit(8).";

// Memory that runs out (`softlimit -m`) is an internal error like any other,
// answered with the exit code, never by Rust's abort.
#[global_allocator]
static ALLOCATOR: ExitOnOom = ExitOnOom;

// The C `main` is ours rather than Rust's runtime start-up, which reads
// /proc/self/maps and sets up a signal stack before `main`: measured, that
// was a quarter of the plug-in's cost per recipient. What the runtime would
// have done that matters here is done by hand, before anything else: the
// signals a limit raises are ignored and closed standard descriptors are
// filled, so that no input or resource limit ends the plug-in by a signal.
#[cfg_attr(not(test), no_mangle)]
extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    process::ignore_limit_signals();
    process::fill_closed_descriptors();
    if argc > 1 {
        return by_hand(argc, argv);
    }
    if internal_code() == TEMPFAIL {
        process::on_out_of_memory(
            TEMPFAIL,
            "rcptcheck-overlimit: internal error, answering 111: out of memory\n",
        );
    } else {
        process::on_out_of_memory(
            GO_ON,
            "rcptcheck-overlimit: internal error, recipient passes uncounted: out of memory\n",
        );
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

/// Answers an administrator who typed arguments: `--help` or `--version`
/// on stdout and 0; anything else named on stderr, nothing read or
/// counted, and 111. Nothing here may panic: no panic hook is set yet.
/// Kept out of line and cold, so that qmail-smtpd's calls, which never
/// come here, do not pay for its code in `main`.
#[cold]
#[inline(never)]
fn by_hand(argc: libc::c_int, argv: *const *const libc::c_char) -> i32 {
    use std::io::Write;
    // SAFETY: the C start-up passes argc strings in argv, each
    // NUL-terminated and alive for the whole run.
    let args: Vec<&[u8]> = (1..argc as usize)
        .map(|i| unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) }.to_bytes())
        .collect();
    let out = match args[..] {
        [b"-h" | b"--help"] => USAGE.to_string(),
        [b"-V" | b"--version"] => format!("{NAME} {}", env!("CARGO_PKG_VERSION")),
        _ => {
            let known = |a: &[u8]| matches!(a, b"-h" | b"--help" | b"-V" | b"--version");
            let problem = match args.iter().find(|a| !known(a)) {
                Some(a) => format!("unknown argument {}", shown(a)),
                None => "one option at a time".to_string(),
            };
            let _ = writeln!(
                std::io::stderr(),
                "{NAME}: {problem} (qmail-smtpd runs it with none; try --help); \
                 nothing counted, answering 111"
            );
            return TEMPFAIL;
        }
    };
    match writeln!(std::io::stdout(), "{out}") {
        Ok(()) => 0,
        Err(_) => TEMPFAIL,
    }
}

/// `OVERLIMIT_FAILCLOSED`, a switch as `config::switch` reads one, but
/// read without allocating: the answer to running out of memory must be
/// known before the first allocation.
fn fails_closed() -> bool {
    // SAFETY: getenv with a literal name, before any thread could change
    // the environment; the result is NULL or a NUL-terminated string.
    unsafe {
        let v = libc::getenv(c"OVERLIMIT_FAILCLOSED".as_ptr());
        !v.is_null() && *v != 0 && !(*v == b'0' as libc::c_char && *v.add(1) == 0)
    }
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
    let client = client().ok_or(Internal::NoClient)?;
    let now = Time::now();
    let asked = Asked::one(config, &client, now, started + LOCK_WAIT);
    let result = decision::decide(
        &asked,
        |notes| lookup::resolve(&config.control, &client, notes),
        &mut config.store()?,
        &mut |m| log::line(NAME, m),
    )?
    .result;
    if result.accepted() {
        return Ok(GO_ON);
    }
    let name = client.name();
    let recipient = std::env::var_os("RECIPIENT").unwrap_or_default();
    log::line(
        NAME,
        &refusal::log_line(&name, &result, now, config.monitor, recipient.as_bytes()),
    );
    if let Some(program) = &config.notify {
        notify(program, &result.newly_full);
    }
    if config.monitor {
        return Ok(GO_ON);
    }
    if let Some(code) = config.reply {
        if std::env::var_os("USE_FD4").is_some() {
            if let Some(text) = refusal::reply(code, &name, &result, now) {
                // SAFETY: writing a buffer we own to a descriptor number;
                // an fd 4 that is not open makes write fail with EBADF, and
                // every file this process opened is closed by now.
                unsafe {
                    libc::write(4, text.as_ptr().cast(), text.len());
                }
            }
        }
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
    if fails_closed() {
        TEMPFAIL
    } else {
        GO_ON
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
            .map_or_else(|| "reset".to_string(), |t| t.secs_up().to_string());
        let mut command = std::process::Command::new(program);
        command
            .arg(OsStr::from_bytes(&f.label))
            .arg(f.item.to_string())
            .arg(f.count.to_string())
            .arg(room)
            .stdin(std::process::Stdio::null());
        // SAFETY: the closure only sets signal dispositions, which is
        // async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                process::restore_limit_signals();
                Ok(())
            });
        }
        let spawned = command.spawn();
        if let Err(e) = spawned {
            log::line(
                NAME,
                &format!(
                    "cannot start OVERLIMIT_NOTIFY {}: {e}",
                    printable(program.as_bytes())
                ),
            );
        }
    }
}

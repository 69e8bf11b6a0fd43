//! Postfix's policy service for overlimit: the same limits, counters and
//! control file as rcptcheck-overlimit, for Postfix's smtpd
//! (`check_policy_service`).
//!
//! With no argument it serves one connection on stdin/stdout, as spawn(8)
//! runs it; `--listen unix:PATH` or `--listen inet:HOST:PORT` serves many
//! until SIGTERM. This file reads the arguments and decides the exit code;
//! the protocol is in `overlimit::policy`.

use overlimit::policy::decide::Settings;
use overlimit::policy::listen::{self, Address};
use overlimit::policy::logger::Logger;
use overlimit::policy::serve::{self, End};
use std::process::ExitCode;

const USAGE: &str = "\
usage: overlimit-policy                      serve one connection on stdin/stdout (spawn(8))
       overlimit-policy --listen unix:PATH   serve a unix socket until SIGTERM
       overlimit-policy --listen inet:HOST:PORT
       overlimit-policy --help | --version

Environment: RELAYLIMITS, OVERLIMITDIR, OVERLIMIT_POLICY_ACTION (defer, reject
or hold), OVERLIMIT_MONITOR, OVERLIMIT_FAILCLOSED, OVERLIMIT_NOTIFY.
See overlimit-policy(8).";

/// Exit codes (overlimit-policy(8), EXIT CODES).
const DONE: u8 = 0;
const CLOSED_UNREAD: u8 = 1;
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let listen = match args.as_slice() {
        [] => None,
        ["--help" | "-h"] => return print(USAGE),
        ["--version" | "-V"] => {
            return print(concat!("overlimit-policy ", env!("CARGO_PKG_VERSION")))
        }
        ["--listen", address] => match Address::parse(address) {
            Ok(a) => Some(a),
            Err(e) => return usage_error(Logger::Stderr, &e),
        },
        ["--listen"] => {
            return usage_error(Logger::Stderr, "--listen needs unix:PATH or inet:HOST:PORT")
        }
        [flag, ..] if flag.starts_with('-') && !matches!(*flag, "--listen") => {
            return usage_error(Logger::Stderr, &format!("unknown flag {flag}"))
        }
        [.., extra] => return usage_error(Logger::Stderr, &format!("unexpected argument {extra}")),
    };
    // In spawn mode stderr may be the socket itself: decide where logs go
    // before anything could be logged, panics included.
    let logger = if listen.is_some() {
        Logger::Stderr
    } else {
        Logger::for_stdin()
    };
    std::panic::set_hook(Box::new(move |info| {
        logger.line(&format!("internal error: {info}").replace('\n', " "))
    }));
    let settings = match Settings::from_env(logger) {
        Ok(s) => s,
        Err(e) => return usage_error(logger, &e),
    };
    match listen {
        None => {
            // SIGPIPE is ignored by Rust's start-up: a peer that goes away
            // gives a write error, which ends the connection.
            let end =
                serve::connection(std::io::stdin().lock(), std::io::stdout().lock(), &settings);
            ExitCode::from(if end == End::Closed {
                DONE
            } else {
                CLOSED_UNREAD
            })
        }
        Some(address) => match listen::run(&address, settings) {
            Ok(()) => ExitCode::from(DONE),
            Err(e) => {
                logger.line(&e);
                ExitCode::from(USAGE_ERROR)
            }
        },
    }
}

fn print(text: &str) -> ExitCode {
    println!("{text}");
    ExitCode::from(DONE)
}

fn usage_error(logger: Logger, message: &str) -> ExitCode {
    logger.line(&format!("{message} (try --help)"));
    ExitCode::from(USAGE_ERROR)
}

//! Postfix's policy service for overlimit: the same limits, counters and
//! control file as rcptcheck-overlimit, for Postfix's smtpd
//! (`check_policy_service`).
//!
//! With no argument it serves one connection on stdin/stdout, as spawn(8)
//! runs it; `--listen unix:PATH` or `--listen inet:HOST:PORT` serves many
//! until SIGTERM. This file reads the arguments and decides the exit code;
//! the protocol is in `overlimit::policy`.

use overlimit::admin::metrics::DEFAULT_TOP;
use overlimit::policy::decide::Settings;
use overlimit::policy::listen::{self, Address};
use overlimit::policy::logger::Logger;
use overlimit::policy::metrics::{self as policy_metrics, Metrics};
use overlimit::policy::serve::{self, End};
use std::process::ExitCode;

const VERSION: &str = concat!("overlimit-policy ", env!("CARGO_PKG_VERSION"));

const USAGE: &str = "\
usage: overlimit-policy                      serve one connection on stdin/stdout (spawn(8))
       overlimit-policy --listen unix:PATH   serve a unix socket until SIGTERM
       overlimit-policy --listen inet:HOST:PORT
       overlimit-policy --listen ADDRESS --metrics HOST:PORT [--metrics-top N]
                                             also serve `overlimit metrics` on HTTP
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
    let options = match Options::parse(&args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Print(text)) => return print(text),
        Err(e) => return usage_error(Logger::Stderr, &e),
    };
    let listen = options.listen;
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
        Some(address) => {
            if let Some((host, port)) = &options.metrics {
                let store = match settings.config.store() {
                    Ok(s) => s,
                    Err(e) => return usage_error(logger, &e.to_string()),
                };
                let metrics = Metrics {
                    control: settings.config.control.clone(),
                    store,
                    top: options.top,
                    logger,
                };
                if let Err(e) = policy_metrics::start(host, *port, metrics) {
                    return usage_error(logger, &e);
                }
            }
            match listen::run(&address, settings) {
                Ok(()) => ExitCode::from(DONE),
                Err(e) => {
                    logger.line(&e);
                    ExitCode::from(USAGE_ERROR)
                }
            }
        }
    }
}

/// What the command line asks for.
enum Parsed {
    Run(Options),
    Print(&'static str),
}

struct Options {
    listen: Option<Address>,
    metrics: Option<(String, u16)>,
    top: usize,
}

impl Options {
    fn parse(args: &[&str]) -> Result<Parsed, String> {
        let mut options = Options {
            listen: None,
            metrics: None,
            top: DEFAULT_TOP,
        };
        let mut top_given = false;
        let mut rest = args.iter();
        while let Some(&arg) = rest.next() {
            let mut value = |what: &str| rest.next().copied().ok_or_else(|| what.to_string());
            match arg {
                "--help" | "-h" if args.len() == 1 => return Ok(Parsed::Print(USAGE)),
                "--version" | "-V" if args.len() == 1 => return Ok(Parsed::Print(VERSION)),
                "--listen" if options.listen.is_none() => {
                    let v = value("--listen needs unix:PATH or inet:HOST:PORT")?;
                    options.listen = Some(Address::parse(v)?);
                }
                "--metrics" if options.metrics.is_none() => {
                    let v = value("--metrics needs HOST:PORT")?;
                    options.metrics = Some(policy_metrics::parse_address(v)?);
                }
                "--metrics-top" if !top_given => {
                    let v = value("--metrics-top needs a number")?;
                    options.top = v
                        .parse()
                        .map_err(|_| format!("--metrics-top {v}: not a number"))?;
                    top_given = true;
                }
                "--listen" | "--metrics" | "--metrics-top" => {
                    return Err(format!("{arg} given twice"))
                }
                flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
                extra => return Err(format!("unexpected argument {extra}")),
            }
        }
        if options.listen.is_none() && (options.metrics.is_some() || top_given) {
            return Err("--metrics needs --listen (spawn mode serves one connection)".into());
        }
        Ok(Parsed::Run(options))
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

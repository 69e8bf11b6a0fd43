//! `overlimit`: the administrator's tool. Picks the subcommand; each lives in
//! `src/admin/` with its usage text. Arguments are read as bytes
//! (`args_os`): a name need not be UTF-8, and no input ends in a panic.

use overlimit::admin::{
    block, check, compile, exit, history, metrics, migrate, replay, reset, status, Args,
};
use overlimit::client::shown;
use overlimit::config::Config;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

const USAGE: &str = "usage: overlimit COMMAND [ARGS]

commands:
  check [--replay [JOURNAL]]   report bad, unmatchable and ineffective lines
                               of RELAYLIMITS, and counters the plug-in
                               cannot write; --replay: who the journal's
                               episodes and the counters say it would refuse
  compile                      write RELAYLIMITS.cdb for large control files
  status [--json] [NAME...]    show counters, over-limit ones first
  metrics [--top N] [--output FILE]
                               the counters in Prometheus' text format
  history [--since 7d] [--json] [NAME...]
                               episodes over a limit, from the journal
  block [--for 1d] [--reason TEXT] NAME
                               refuse NAME at once, until --for or unblock
  unblock NAME                 lift a block
  reset NAME...                free clients (remove their counters); NAME
                               may be *@domain or an address range
  migrate                      move the counter files of OVERLIMITDIR into
                               the server of OVERLIMIT_REDIS, keeping counts

options: -h, --help (also after a command), -V, --version

exit: 0 done; 1 check found problems (a missing RELAYLIMITS among them) or
compile refused bad lines; 2 usage error or a file that cannot be read or
written (for compile, a missing RELAYLIMITS).

environment: RELAYLIMITS (default /var/qmail/control/relaylimits),
OVERLIMITDIR (default /var/qmail/overlimit), OVERLIMIT_ATCHARS (default @%/).
See overlimit(8).";

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(run(&args))
}

fn run(args: &[OsString]) -> i32 {
    let help = |text: &str| {
        println!("{text}");
        exit::OK
    };
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return exit::TROUBLE;
    };
    let rest = &args[1..];
    let usage = match command.as_bytes() {
        b"-h" | b"--help" | b"help" => return help(USAGE),
        b"-V" | b"--version" => return help(concat!("overlimit ", env!("CARGO_PKG_VERSION"))),
        b"check" => check::USAGE,
        b"compile" => compile::USAGE,
        b"status" => status::USAGE,
        b"reset" => reset::USAGE,
        b"metrics" => metrics::USAGE,
        b"history" => history::USAGE,
        b"block" | b"unblock" => block::USAGE,
        b"migrate" => migrate::USAGE,
        other => {
            eprintln!("overlimit: unknown command {}\n{USAGE}", shown(other));
            return exit::TROUBLE;
        }
    };
    // `--help` anywhere before a `--` asks for the command's summary.
    let flags = rest.iter().take_while(|a| a.as_bytes() != b"--");
    if flags.clone().any(|a| a == "-h" || a == "--help") {
        return help(usage);
    }
    let config = Config::from_env();
    let store = || {
        config.store().map_err(|e| {
            eprintln!("overlimit: {e}");
            exit::TROUBLE
        })
    };
    match command.as_bytes() {
        b"status" => store().map_or_else(|c| c, |mut s| status::run(&config.control, &mut s, rest)),
        b"history" => history::run(&config.dir, rest),
        b"check" if rest.first().is_some_and(|a| a == "--replay") => {
            let journal = match &rest[1..] {
                [] => None,
                [j] => Some(std::path::Path::new(j)),
                [_, extra, ..] => {
                    eprintln!(
                        "overlimit check: unexpected argument {}\n{}",
                        shown(extra.as_bytes()),
                        check::USAGE
                    );
                    return exit::TROUBLE;
                }
            };
            let found = check::run(&config.control, &config.dir, config.redis.as_deref());
            let replayed = store().map_or_else(
                |c| c,
                |mut s| replay::run(&config.control, &config.dir, &mut s, journal),
            );
            found.max(replayed)
        }
        b"block" | b"unblock" => store().map_or_else(
            |c| c,
            |mut s| block::run(&mut s, &config.dir, rest, command == "unblock"),
        ),
        b"reset" => store().map_or_else(|c| c, |mut s| reset::run(&mut s, &config.dir, rest)),
        b"migrate" => migrate::run(&config.dir, config.redis.as_deref(), rest),
        b"metrics" => {
            store().map_or_else(|c| c, |mut s| metrics::run(&config.control, &mut s, rest))
        }
        _ => match Args::parse(rest, &[]) {
            Ok(a) if a.names.is_empty() => {
                if command == "check" {
                    check::run(&config.control, &config.dir, config.redis.as_deref())
                } else {
                    compile::run(&config.control)
                }
            }
            Ok(a) => {
                let name = shown(&a.names[0]);
                eprintln!(
                    "overlimit: {}: unexpected argument {name}\n{usage}",
                    shown(command.as_bytes())
                );
                exit::TROUBLE
            }
            Err(e) => {
                eprintln!("overlimit {}: {e}\n{usage}", shown(command.as_bytes()));
                exit::TROUBLE
            }
        },
    }
}

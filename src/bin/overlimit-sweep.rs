//! `overlimit-sweep`: the cron job. Resets classic counts and removes counters
//! with nothing left; with `--keep-overlimit`, clients at or over a classic
//! limit keep their count (a ban until `overlimit reset`), one line each on
//! stdout so cron mails the list to the administrator.

use overlimit::admin::{exit, Args};
use overlimit::client::shown;
use overlimit::config::Config;
use overlimit::sweep::{classic_limits, sweep_one_ending, Swept};
use std::ffi::OsString;
use std::time::Instant;

const USAGE: &str = "usage: overlimit-sweep [--keep-overlimit]

Resets every classic count in OVERLIMITDIR and removes counters with nothing
left in any window. --keep-overlimit leaves clients at or over their classic
limit untouched and prints one line for each.

options: -h, --help, -V, --version
exit: 0 done; 2 usage error, or a counter or directory that could not be
read or written (the others are still swept). See overlimit-sweep(8).";

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let known = ["--keep-overlimit", "-h", "--help", "-V", "--version"];
    let args = match Args::parse(&args, &known) {
        Ok(a) if a.names.is_empty() => a,
        Ok(a) => {
            eprintln!(
                "overlimit-sweep: unexpected argument {}\n{USAGE}",
                shown(&a.names[0])
            );
            std::process::exit(exit::TROUBLE)
        }
        Err(e) => {
            eprintln!("overlimit-sweep: {e}\n{USAGE}");
            std::process::exit(exit::TROUBLE)
        }
    };
    if args.has("-h") || args.has("--help") {
        println!("{USAGE}");
        std::process::exit(exit::OK)
    }
    if args.has("-V") || args.has("--version") {
        println!("overlimit-sweep {}", env!("CARGO_PKG_VERSION"));
        std::process::exit(exit::OK)
    }
    std::process::exit(run(&Config::from_env(), args.has("--keep-overlimit")))
}

fn run(config: &Config, keep: bool) -> i32 {
    let say = |what: &dyn std::fmt::Display| eprintln!("overlimit-sweep: {what}");
    let mut store = match config.store() {
        Ok(s) => s,
        Err(e) => {
            say(&e);
            return exit::TROUBLE;
        }
    };
    // Listing a server's keys takes a round trip per thousand.
    let listed = Instant::now() + overlimit::time::ADMIN_LOCK_WAIT;
    let files = match store.files(listed) {
        Ok(f) => f,
        Err(e) => {
            say(&e);
            return exit::TROUBLE;
        }
    };
    let limits = if keep {
        let mut notes = Vec::new();
        let found = classic_limits(&config.control, &mut store, &files, &mut notes);
        for n in &notes {
            say(&format!("{}: {n}", config.control.display()));
        }
        match found {
            Ok(l) => Some(l),
            Err(e) => {
                // Without the limits no ban can be told apart: sweep nothing.
                say(&e);
                return exit::TROUBLE;
            }
        }
    } else {
        None
    };
    let now = overlimit::time::Time::now();
    let mut code = exit::OK;
    let mut ended = Vec::new();
    for file in files {
        match sweep_one_ending(&mut store, &file, limits.as_ref(), now, &mut ended) {
            Ok(Swept::Kept {
                client,
                count,
                limit,
            }) => {
                // The client's name as `status` prints it and `reset` takes it.
                println!("kept {}: {count} counted, limit {limit}", shown(&client));
            }
            Ok(_) => {}
            Err(e) => {
                say(&e);
                code = exit::TROUBLE;
            }
        }
    }
    let events = overlimit::journal::freed(&ended, now.secs());
    if let Err(e) = overlimit::journal::append(&config.dir, &events) {
        eprintln!(
            "overlimit-sweep: {}: {e}",
            config.dir.join(overlimit::journal::NAME).display()
        );
        code = exit::TROUBLE;
    }
    code
}

//! `overlimit-sweep`: the cron job. Resets classic counts and removes counters
//! with nothing left; with `--keep-overlimit`, clients at or over a classic
//! limit keep their count (a ban until `overlimit reset`), one line each on
//! stdout so cron mails the list to the administrator.

use overlimit::client::printable;
use overlimit::config::Config;
use overlimit::sweep::{counter_files, sweep_one, Swept};

const USAGE: &str = "usage: overlimit-sweep [--keep-overlimit]

Resets every classic count in OVERLIMITDIR and removes counters with nothing
left in any window. --keep-overlimit leaves clients at or over their classic
limit untouched and prints one line for each.";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => false,
        ["--keep-overlimit"] => true,
        ["-h" | "--help"] => {
            println!("{USAGE}");
            std::process::exit(0)
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2)
        }
    };
    std::process::exit(run(&Config::from_env(), keep))
}

fn run(config: &Config, keep: bool) -> i32 {
    let files = match counter_files(&config.dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("overlimit-sweep: {e}");
            return 2;
        }
    };
    let now = overlimit::time::Time::now();
    let mut code = 0;
    for file in files {
        match sweep_one(&config.dir, &file, &config.control, keep, now) {
            Ok(Swept::Kept {
                client,
                count,
                limit,
            }) => {
                // The client's name, not its file's: what `overlimit reset` takes.
                println!(
                    "kept {}: {count} counted, limit {limit}",
                    printable(&client)
                );
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("overlimit-sweep: {e}");
                code = 2;
            }
        }
    }
    code
}

//! `overlimit`: the administrator's tool. Picks the subcommand; each lives in
//! `src/admin/` with its usage text.

use overlimit::admin::{check, compile, reset, status};
use overlimit::config::Config;

const USAGE: &str = "usage: overlimit COMMAND [ARGS]

commands:
  check                     report bad and ineffective lines of RELAYLIMITS
  compile                   write RELAYLIMITS.cdb for large control files
  status [--json] [CLIENT]  show counted clients, over-limit ones first
  reset CLIENT...           free clients (remove their counters)

environment: RELAYLIMITS (default /var/qmail/control/relaylimits),
OVERLIMITDIR (default /var/qmail/overlimit). See overlimit(8).";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = Config::from_env();
    let help = |text: &str| {
        println!("{text}");
        0
    };
    let code = match args.first().map(String::as_str) {
        Some("-h" | "--help" | "help") => help(USAGE),
        Some("-V" | "--version") => help(concat!("overlimit ", env!("CARGO_PKG_VERSION"))),
        Some(cmd) if args.iter().skip(1).any(|a| a == "-h" || a == "--help") => help(match cmd {
            "check" => check::USAGE,
            "compile" => compile::USAGE,
            "status" => status::USAGE,
            "reset" => reset::USAGE,
            _ => USAGE,
        }),
        Some("check") if args.len() == 1 => check::run(&config.control),
        Some("compile") if args.len() == 1 => compile::run(&config.control),
        Some("status") => status::run(&config.control, &config.dir, &args[1..]),
        Some("reset") => reset::run(&config.dir, &args[1..]),
        _ => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code)
}

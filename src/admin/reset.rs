//! `overlimit reset CLIENT...`: frees clients by removing their counters under
//! lock, as the sweep does, so no increment racing with it is lost.

use super::status::file_of;
use crate::store::Locked;
use std::path::Path;
use std::time::Instant;

pub const USAGE: &str = "usage: overlimit reset CLIENT...

Removes the counters of the named clients (`@domain` for a domain's shared
counter): their counts, windows and refused attempts start again from zero.";

pub fn run(dir: &Path, names: &[String]) -> i32 {
    if names.is_empty() {
        eprintln!("{USAGE}");
        return 2;
    }
    let mut code = 0;
    for name in names {
        let file = file_of(name.as_bytes());
        let deadline = Instant::now() + crate::time::ADMIN_LOCK_WAIT;
        match Locked::open_existing(dir, &file, deadline)
            .and_then(|l| l.map(Locked::remove).transpose())
        {
            Ok(Some(())) => println!("{name}: reset"),
            Ok(None) => println!("{name}: not counted"),
            Err(e) => {
                eprintln!("overlimit: {e}");
                code = 2;
            }
        }
    }
    code
}

//! The do-nothing policy server of scripts/bench-policy.sh: the ceiling a
//! policy service can reach on this machine with this client. It speaks the
//! protocol with the same threads-per-connection shape as overlimit-policy
//! and keeps the limit the benchmark asks for (LIMIT per sasl_username) in
//! memory only, so its counts can be checked like every other server's; no
//! control file, no counter files, no windows.
//!
//!   policy-null inet:HOST:PORT|unix:PATH LIMIT

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

fn serve(stream: impl Read + Write, counts: &Mutex<HashMap<Vec<u8>, u64>>, limit: u64) {
    let mut input = BufReader::new(stream);
    let mut line = Vec::new();
    let mut user = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line != b"\n" {
            if let Some(v) = line.strip_prefix(b"sasl_username=") {
                user.clear();
                user.extend_from_slice(v.strip_suffix(b"\n").unwrap_or(v));
            }
            continue;
        }
        let over = {
            let mut counts = counts.lock().unwrap();
            let n = counts.entry(std::mem::take(&mut user)).or_insert(0);
            if *n < limit {
                *n += 1;
                false
            } else {
                true
            }
        };
        let reply: &[u8] = if over {
            b"action=450 4.7.1 over the limit\n\n"
        } else {
            b"action=DUNNO\n\n"
        };
        if input.get_mut().write_all(reply).is_err() {
            return;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, limit] = &args[..] else {
        eprintln!("usage: policy-null ADDRESS LIMIT");
        std::process::exit(2);
    };
    let limit: u64 = limit.parse().unwrap();
    let counts = Arc::new(Mutex::new(HashMap::new()));
    if let Some(path) = address.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        for s in UnixListener::bind(path).unwrap().incoming() {
            let counts = Arc::clone(&counts);
            let s = s.unwrap();
            std::thread::spawn(move || serve(s, &counts, limit));
        }
    } else {
        let l = TcpListener::bind(address.strip_prefix("inet:").unwrap()).unwrap();
        for s in l.incoming() {
            let counts = Arc::clone(&counts);
            let s = s.unwrap();
            s.set_nodelay(true).unwrap();
            std::thread::spawn(move || serve(s, &counts, limit));
        }
    }
}

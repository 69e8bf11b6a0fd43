//! The load client of scripts/bench-policy.sh: CONNECTIONS connections to a
//! policy server, each sending REQUESTS RCPT requests one after another (as
//! an smtpd does), spread over USERS SASL logins (connection C sends its Ith request as
//! login (C + I) mod USERS, so that connections meet different users at any
//! moment, as different smtpd sessions mostly do, and each user gets the same
//! share when USERS divides REQUESTS) named
//! PREFIX-N@bench.example. Prints one line: requests per second, the 50th
//! and 99th percentile latency, and how many requests were accepted
//! (DUNNO) and refused (anything else), so the script can check the counts.
//!
//!   policy-load inet:127.0.0.1:10040|unix:PATH CONNECTIONS REQUESTS USERS PREFIX

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

trait Stream: std::io::Read + Write + Send {}
impl Stream for TcpStream {}
impl Stream for UnixStream {}

fn connect(address: &str) -> Box<dyn Stream> {
    if let Some(path) = address.strip_prefix("unix:") {
        return Box::new(UnixStream::connect(path).expect("connect"));
    }
    let hostport = address
        .strip_prefix("inet:")
        .expect("inet:HOST:PORT or unix:PATH");
    let s = TcpStream::connect(hostport).expect("connect");
    s.set_nodelay(true).unwrap();
    Box::new(s)
}

/// A request with the attributes Postfix 3.7 sends; the recipient differs
/// every time, so no server can answer from a cache of whole requests.
fn request(user: &str, connection: usize, i: usize) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
         client_address=192.0.2.{}\nclient_name=unknown\nreverse_client_name=unknown\n\
         helo_name=client.example\nsender={user}\nrecipient=r{connection}-{i}@remote.example\n\
         recipient_count=0\nqueue_id=\ninstance=bench.{connection}.{i}\nsize=0\n\
         etrn_domain=\nstress=\nsasl_method=PLAIN\nsasl_username={user}\nsasl_sender=\n\
         ccert_subject=\nccert_issuer=\nccert_fingerprint=\nencryption_protocol=\n\
         encryption_cipher=\nencryption_keysize=0\nclient_port=40000\npolicy_context=\n\
         server_address=127.0.0.1\nserver_port=587\ncompatibility_level=3.6\n\
         mail_version=3.7.11\n\n",
        connection % 250 + 1
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, connections, requests, users, prefix] = &args[..] else {
        eprintln!("usage: policy-load ADDRESS CONNECTIONS REQUESTS USERS PREFIX");
        std::process::exit(2);
    };
    let (connections, requests, users): (usize, usize, usize) = (
        connections.parse().unwrap(),
        requests.parse().unwrap(),
        users.parse().unwrap(),
    );
    let streams: Vec<Box<dyn Stream>> = (0..connections).map(|_| connect(address)).collect();
    let start = Arc::new(Barrier::new(connections + 1));
    let threads: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, mut stream)| {
            let start = Arc::clone(&start);
            let prefix = prefix.clone();
            // Prepared before the clock starts: the client's own work stays
            // out of the measurement as far as it can.
            let prepared: Vec<String> = (0..requests)
                .map(|i| request(&format!("{prefix}-{}@bench.example", (c + i) % users), c, i))
                .collect();
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(requests);
                let mut accepted = 0u64;
                let mut line = String::new();
                start.wait();
                let mut input = BufReader::new(Reader(&mut *stream));
                for r in &prepared {
                    let t = Instant::now();
                    input.get_mut().0.write_all(r.as_bytes()).expect("send");
                    line.clear();
                    input.read_line(&mut line).expect("reply");
                    let action = line.clone();
                    loop {
                        line.clear();
                        if input.read_line(&mut line).expect("reply") == 0 {
                            panic!("the server closed the connection");
                        }
                        if line == "\n" {
                            break;
                        }
                    }
                    latencies.push(t.elapsed());
                    if action.to_ascii_lowercase().starts_with("action=dunno") {
                        accepted += 1;
                    }
                }
                (latencies, accepted)
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut all: Vec<Duration> = Vec::with_capacity(connections * requests);
    let mut accepted = 0;
    for t in threads {
        let (l, a) = t.join().expect("a connection failed");
        all.extend(l);
        accepted += a;
    }
    let elapsed = began.elapsed().as_secs_f64();
    if all.is_empty() {
        // No requests: a probe that the server takes connections.
        println!("requests=0");
        return;
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1];
    let total = all.len() as u64;
    println!(
        "requests={total} seconds={elapsed:.3} rps={:.0} p50_ms={:.3} p99_ms={:.3} accepted={accepted} refused={}",
        total as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        total - accepted
    );
}

/// Lets one BufReader read from the stream it also writes requests to.
struct Reader<'a>(&'a mut dyn Stream);

impl std::io::Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

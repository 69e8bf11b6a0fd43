//! `overlimit-policy --metrics HOST:PORT`: the text of `overlimit metrics`
//! served on HTTP for a Prometheus server to scrape, beside the policy
//! socket, so a Postfix host needs no textfile collector.
//!
//! One thread answers one connection at a time: a scrape every few seconds
//! is the whole load, and a client that sends nothing is dropped after
//! `TIMEOUT`, so it delays the next scrape by that at most and never the
//! policy answers, which run on threads of their own.

use super::listen::Address;
use super::logger::Logger;
use crate::admin::metrics::render;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// How long one HTTP client may take to send its request or read the answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A request head longer than this is answered 431 and closed.
const MAX_HEAD: usize = 8192;

/// What the metrics thread reads and where it logs.
pub struct Metrics {
    pub control: PathBuf,
    /// The counters; the thread keeps a server's connection.
    pub store: crate::backend::Store,
    pub top: usize,
    pub logger: Logger,
}

/// `HOST:PORT` (an IPv6 HOST in brackets), as for `--listen inet:`.
pub fn parse_address(text: &str) -> Result<(String, u16), String> {
    match Address::parse(&format!("inet:{text}")) {
        Ok(Address::Inet(host, port)) => Ok((host, port)),
        _ => Err(format!("--metrics {text}: use HOST:PORT")),
    }
}

/// Binds `host:port` now (so a bad address stops the daemon at start) and
/// serves scrapes on a thread of its own until the process ends.
pub fn start(host: &str, port: u16, metrics: Metrics) -> Result<(), String> {
    let listener = TcpListener::bind((host, port))
        .map_err(|e| format!("--metrics {host}:{port}: cannot listen: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let mut metrics = metrics;
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => answer(s, &mut metrics),
                    Err(e) => {
                        metrics.logger.line(&format!("metrics: accept: {e}"));
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(())
}

/// Reads one request head and answers it; any failure just closes.
fn answer(mut stream: TcpStream, metrics: &mut Metrics) {
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD {
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "too long\n",
            );
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next(), words.next());
    if method != Some(b"GET".as_slice()) {
        respond(&mut stream, "405 Method Not Allowed", "GET /metrics\n");
        return;
    }
    if !matches!(target, Some(b"/metrics" | b"/")) {
        respond(&mut stream, "404 Not Found", "GET /metrics\n");
        return;
    }
    let logger = metrics.logger;
    let mut log = |e: &crate::error::Internal| logger.line(&format!("metrics: {e}"));
    match render(&metrics.control, &mut metrics.store, metrics.top, &mut log) {
        Ok(scrape) => respond(&mut stream, "200 OK", &scrape.text),
        Err(e) => {
            log(&e);
            respond(&mut stream, "500 Internal Server Error", &format!("{e}\n"));
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

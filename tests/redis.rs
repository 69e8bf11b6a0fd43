//! The Redis backend against a real `redis-server` (Debian's), one private
//! server per test on a unix socket in the test's temporary directory: the
//! client's deadlines, AUTH and SELECT, and counters that rise together or
//! not at all under concurrent writers.

mod common;
#[path = "support/redis_server.rs"]
mod redis_server;

use common::*;
use overlimit::counter::Counter;
use overlimit::redis::counters::{self, Change, Expiry, Found};
use overlimit::redis::{Conn, Server};
use redis_server::{Options, RedisServer};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

/// A server in a fresh directory, or a skip (a failure under CI).
fn server(options: Options) -> Option<RedisServer> {
    let server = RedisServer::start(&fresh_dir("redis"), options);
    if server.is_none() {
        skip("redis-server is not installed (apt-get install redis-server)");
    }
    server
}

fn connect(url: &str, within: Duration) -> Result<Conn, String> {
    let server = Server::parse(url).map_err(|e| e.to_string())?;
    Conn::open(&server, Instant::now() + within).map_err(|e| e.to_string())
}

/// Raises the counters at `keys` by one each, all or none, while every one
/// is below `max`; true when it did.
fn raise_below(conn: &mut Conn, keys: &[Vec<u8>], max: u64) -> bool {
    counters::transact(conn, keys, |found| {
        let found: Vec<Counter> = found
            .into_iter()
            .map(|f| match f {
                Found::Counter(c) => c,
                _ => Counter::default(),
            })
            .collect();
        if found.iter().any(|c| c.total >= max) {
            return Ok((false, vec![Change::Keep; keys.len()]));
        }
        let changes = found
            .into_iter()
            .map(|mut c| {
                c.total += 1;
                Change::Set(c, Expiry::Never)
            })
            .collect();
        Ok((true, changes))
    })
    .unwrap()
}

fn total(conn: &mut Conn, key: &[u8]) -> u64 {
    counters::read(conn, key).unwrap().map_or(0, |c| c.total)
}

#[test]
fn counters_rise_together_exactly_to_the_limit_under_8_writers() {
    let Some(redis) = server(Options::default()) else {
        return;
    };
    let url = redis.url("");
    // Eight clients of one domain, each with its own counter and the
    // domain's shared one: the domain's limit of 100 holds exactly.
    let domain = counters::key("@example.com");
    let accepted: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let (url, domain) = (url.clone(), domain.clone());
                s.spawn(move || {
                    let name = format!("u{i}@example.com");
                    let keys = [counters::key(&name), domain];
                    let mut n = 0;
                    for _ in 0..40 {
                        let mut conn = connect(&url, Duration::from_secs(5)).unwrap();
                        n += u64::from(raise_below(&mut conn, &keys, 100));
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let mut conn = connect(&url, Duration::from_secs(5)).unwrap();
    assert_eq!(accepted, 100);
    assert_eq!(total(&mut conn, &domain), 100);
    let own: u64 = (0..8)
        .map(|i| {
            let name = format!("u{i}@example.com");
            total(&mut conn, &counters::key(&name))
        })
        .sum();
    assert_eq!(
        own, 100,
        "every own counter rose with the domain's, no more"
    );
}

#[test]
fn a_lifetime_is_set_and_a_classic_count_keeps_none() {
    let Some(redis) = server(Options::default()) else {
        return;
    };
    let mut conn = connect(&redis.url(""), Duration::from_secs(5)).unwrap();
    let keys = [b"overlimit:{a}:a".to_vec(), b"overlimit:{a}:b".to_vec()];
    counters::transact(&mut conn, &keys, |_| {
        Ok((
            (),
            vec![
                Change::Set(Counter::default(), Expiry::After(Duration::from_secs(60))),
                Change::Set(Counter::default(), Expiry::Never),
            ],
        ))
    })
    .unwrap();
    let ttl: i64 = redis.raw("PTTL overlimit:{a}:a")[1..].parse().unwrap();
    assert!(ttl > 55_000 && ttl <= 60_000, "{ttl}");
    assert_eq!(redis.raw("PTTL overlimit:{a}:b"), ":-1");
    counters::transact(&mut conn, &keys, |_| {
        Ok(((), vec![Change::Delete, Change::Keep]))
    })
    .unwrap();
    assert_eq!(redis.raw("EXISTS overlimit:{a}:a"), ":0");
    assert_eq!(redis.raw("EXISTS overlimit:{a}:b"), ":1");
    // The sweep rewrites a counter without knowing its limits: its
    // lifetime stays what the last decision gave it.
    assert_eq!(redis.raw("PEXPIRE overlimit:{a}:b 90000"), ":1");
    counters::transact(&mut conn, &keys[1..], |_| {
        Ok(((), vec![Change::Set(Counter::default(), Expiry::AsBefore)]))
    })
    .unwrap();
    let ttl: i64 = redis.raw("PTTL overlimit:{a}:b")[1..].parse().unwrap();
    assert!(ttl > 85_000 && ttl <= 90_000, "{ttl}");
}

#[test]
fn a_value_that_is_not_a_counter_reads_as_none_and_a_missing_one_as_empty() {
    let Some(redis) = server(Options::default()) else {
        return;
    };
    assert_eq!(redis.raw("SET overlimit:{x}:x garbage"), "+OK");
    let mut conn = connect(&redis.url(""), Duration::from_secs(5)).unwrap();
    let keys = [b"overlimit:{x}:x".to_vec(), b"overlimit:{x}:y".to_vec()];
    let seen = counters::transact(&mut conn, &keys, |found| {
        Ok((found, vec![Change::Keep, Change::Keep]))
    })
    .unwrap();
    assert_eq!(seen, vec![Found::Damaged, Found::Missing]);
    let e = counters::read(&mut conn, &keys[0]).unwrap_err().to_string();
    assert!(e.contains("overlimit:{x}:x: not a counter"), "{e}");
}

#[test]
fn scan_finds_every_key_of_ours_and_no_other() {
    let Some(redis) = server(Options::default()) else {
        return;
    };
    let mut conn = connect(&redis.url(""), Duration::from_secs(5)).unwrap();
    let keys: Vec<Vec<u8>> = (0..2500).map(|i| counters::key(&format!("c{i}"))).collect();
    for chunk in keys.chunks(500) {
        counters::transact(&mut conn, chunk, |_| {
            Ok((
                (),
                vec![Change::Set(Counter::default(), Expiry::Never); chunk.len()],
            ))
        })
        .unwrap();
    }
    assert_eq!(redis.raw("SET unrelated:key 1"), "+OK");
    let mut want = keys.clone();
    want.sort();
    assert_eq!(counters::all_keys(&mut conn).unwrap(), want);
}

#[test]
fn auth_and_select_are_sent_and_a_wrong_password_is_named_not_shown() {
    let Some(redis) = server(Options {
        password: Some("s3cret-pw".into()),
        ..Options::default()
    }) else {
        return;
    };
    let e = connect(&redis.url("password=wrong-pw"), Duration::from_secs(5))
        .err()
        .unwrap();
    assert!(e.contains("AUTH") && !e.contains("wrong-pw"), "{e}");
    let mut without = connect(&redis.url(""), Duration::from_secs(5)).unwrap();
    let e = counters::read(&mut without, b"k").unwrap_err().to_string();
    assert!(e.contains("NOAUTH"), "{e}");
    let mut in_3 = connect(
        &redis.url("password=s3cret-pw&db=3"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(raise_below(&mut in_3, &[b"overlimit:{k}:k".to_vec()], 10));
    let mut in_0 = connect(&redis.url("password=s3cret-pw"), Duration::from_secs(5)).unwrap();
    assert_eq!(
        total(&mut in_0, b"overlimit:{k}:k"),
        0,
        "db 0 is another database"
    );
    assert_eq!(total(&mut in_3, b"overlimit:{k}:k"), 1);
}

#[test]
fn a_stopped_server_is_an_error_within_the_deadline() {
    let Some(mut redis) = server(Options::default()) else {
        return;
    };
    let url = redis.url("timeout=300");
    let mut conn = connect(&url, Duration::from_secs(1)).unwrap();
    redis.freeze();
    let start = Instant::now();
    let e = counters::read(&mut conn, b"overlimit:{k}:k")
        .unwrap_err()
        .to_string();
    let waited = start.elapsed();
    assert!(e.contains("no answer within the deadline"), "{e}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    // A new connection to the stopped server: the kernel still accepts it,
    // and the first step that needs an answer gives up in time.
    let start = Instant::now();
    let e = connect(&url, Duration::from_secs(1))
        .and_then(|mut c| counters::all_keys(&mut c).map_err(|e| e.to_string()))
        .err()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(1), "{e}");
    redis.thaw();
}

#[test]
fn a_dead_server_is_an_error_at_once() {
    let Some(mut redis) = server(Options::default()) else {
        return;
    };
    let url = redis.url("");
    let mut conn = connect(&url, Duration::from_secs(1)).unwrap();
    redis.kill();
    let e = counters::read(&mut conn, b"overlimit:{k}:k")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("redis unix://") && e.contains("closed the connection"),
        "{e}"
    );
    let start = Instant::now();
    let e = connect(&url, Duration::from_secs(1)).err().unwrap();
    assert!(e.contains("connect"), "{e}");
    assert!(start.elapsed() < Duration::from_millis(500));
}

#[test]
fn a_hostile_server_can_neither_hang_nor_exhaust_the_client() {
    let dir = fresh_dir("redis-fake");
    let socket = dir.join("fake.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let replies: [&[u8]; 4] = [
        b"$999999999999\r\n",
        b"*99999999\r\n",
        b"+a reply line that never ends",
        b"%7\r\n",
    ];
    let server = std::thread::spawn(move || {
        // Every connection stays open until the client has given up.
        let mut open = Vec::new();
        for reply in replies {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
            open.push(s);
        }
    });
    let url = format!("unix://{}?timeout=200", socket.display());
    for want in ["length", "length", "deadline", "unknown type"] {
        let start = Instant::now();
        let e = connect(&url, Duration::from_secs(1))
            .and_then(|mut c| counters::read(&mut c, b"k").map_err(|e| e.to_string()))
            .err()
            .unwrap();
        assert!(e.contains(want), "{want}: {e}");
        assert!(start.elapsed() < Duration::from_millis(400));
    }
    server.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

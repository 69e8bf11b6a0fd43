//! The Redis backend against a real `redis-server` (Debian's), one private
//! server per test on a unix socket in the test's temporary directory: the
//! client's deadlines, AUTH and SELECT, and counters that rise together or
//! not at all under concurrent writers.

mod common;
#[path = "support/policy.rs"]
mod policy;
#[path = "support/process.rs"]
mod process;
#[path = "support/redis_server.rs"]
mod redis_server;

use common::*;
use overlimit::backend::{Change, Expiry, Found};
use overlimit::counter::Counter;
use overlimit::redis::counters;
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

// ---- The engine and the programs over Redis ----------------------------------------

/// Runs `make(worker, i)` ten times in each of 8 concurrent workers; the
/// exit codes.
fn eight_workers(make: impl Fn(usize, usize) -> Run + Sync) -> Vec<Option<i32>> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let make = &make;
                s.spawn(move || (0..10).map(|i| make(w, i).run().code).collect::<Vec<_>>())
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

#[test]
fn two_hosts_sharing_one_server_let_exactly_n_through_in_all_also_with_the_domain_aggregate() {
    let Some(redis) = server(Options::default()) else {
        return;
    };
    let url = redis.url("");
    // Each user may send 100 an hour, the domain 25 in all; and a client
    // with a classic limit of its own, on both hosts.
    let limits = "@example.com:25/1h\n*@example.com:100/1h\nsolo@example.org:13\n:1000\n";
    let hosts = [Sandbox::with_limits(limits), Sandbox::with_limits(limits)];
    let codes = eight_workers(|w, i| {
        hosts[w % 2]
            .user(&format!("u{}@example.com", (w + i) % 5))
            .env("OVERLIMIT_REDIS", &url)
    });
    let through = codes.iter().filter(|&&c| c == Some(112)).count();
    assert_eq!(through, 25, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|&&c| c == Some(113)).count(),
        55,
        "{codes:?}"
    );
    let codes = eight_workers(|w, _| {
        hosts[w % 2]
            .user("solo@example.org")
            .env("OVERLIMIT_REDIS", &url)
    });
    assert_eq!(
        codes.iter().filter(|&&c| c == Some(112)).count(),
        13,
        "{codes:?}"
    );
    for h in &hosts {
        assert!(
            h.counter_files().is_empty(),
            "nothing in the counter directory"
        );
    }
    // Both hosts' status shows the one count.
    for h in &hosts {
        let o = h
            .admin(&["status", "--json", "@example.com"])
            .env("OVERLIMIT_REDIS", &url)
            .run();
        assert_eq!(o.code, Some(0), "{o:?}");
        assert_eq!(json_number(&o.stdout, "count"), 25, "{o:?}");
    }
}

#[test]
fn status_reset_and_the_sweep_work_on_the_shared_counters() {
    let Some(redis) = server(Options::default()) else {
        return;
    };
    let url = redis.url("");
    let s = Sandbox::with_limits("a@example.com:2\nb@example.com:5/1h\n:100\n");
    let run = |r: Run| r.env("OVERLIMIT_REDIS", &url).run();
    for _ in 0..3 {
        run(s.user("a@example.com"));
        run(s.user("b@example.com"));
    }
    assert_eq!(run(s.user("a@example.com")).code, Some(113));
    let o = run(s.admin(&["status"]));
    assert!(
        o.code == Some(0) && o.stdout.contains("a@example.com"),
        "{o:?}"
    );
    assert!(o.stdout.contains("b@example.com"), "{o:?}");
    let o = run(s.admin(&["metrics"]));
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(
        o.stdout.contains("overlimit_counters{kind=\"user\"} 2\n"),
        "{o:?}"
    );
    // a's classic count lives until the sweep; b's window expires by itself.
    assert_eq!(
        redis.raw("PTTL overlimit:{@example.com}:a@example.com"),
        ":-1"
    );
    let ttl: i64 = redis.raw("PTTL overlimit:{@example.com}:b@example.com")[1..]
        .parse()
        .unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_660_000, "{ttl}");
    // The sweep resets the classic count and keeps b's window and lifetime.
    let o = run(s.sweep(&[]));
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(run(s.user("a@example.com")).code, Some(112));
    let ttl: i64 = redis.raw("PTTL overlimit:{@example.com}:b@example.com")[1..]
        .parse()
        .unwrap();
    assert!(ttl > 3_000_000, "{ttl}");
    let o = run(s.admin(&["status", "--json", "b@example.com"]));
    assert!(o.stdout.contains("\"count\":3"), "{o:?}");
    // reset frees b at once, on every host.
    let o = run(s.admin(&["reset", "b@example.com"]));
    assert_eq!(
        (o.code, o.stdout.trim()),
        (Some(0), "b@example.com: reset"),
        "{o:?}"
    );
    assert_eq!(
        redis.raw("EXISTS overlimit:{@example.com}:b@example.com"),
        ":0"
    );
    assert!(s.counter_files().is_empty());
}

#[test]
fn a_stopped_or_killed_server_fails_open_or_closed_within_the_deadline() {
    let Some(mut redis) = server(Options::default()) else {
        return;
    };
    let url = redis.url("");
    let s = Sandbox::with_limits(":5\n");
    assert_eq!(
        s.user("a@example.com").env("OVERLIMIT_REDIS", &url).code(),
        112
    );
    let answered = |what: &str| {
        for (failclosed, code) in [("", 112), ("1", 111)] {
            let o = s
                .user("a@example.com")
                .env("OVERLIMIT_REDIS", &url)
                .env("OVERLIMIT_FAILCLOSED", failclosed)
                .run();
            assert_eq!(o.code, Some(code), "{what}: {o:?}");
            assert!(
                o.stderr.contains("internal error") && o.stderr.contains("redis"),
                "{o:?}"
            );
            assert!(o.elapsed < Duration::from_millis(1500), "{what}: {o:?}");
        }
    };
    redis.freeze();
    answered("stopped");
    redis.kill();
    answered("killed");
    // A shorter deadline is the address's to set.
    assert!(
        s.counter_files().is_empty(),
        "no fallback to files by surprise"
    );
}

#[test]
fn a_restart_with_persistence_keeps_every_count() {
    let Some(mut redis) = server(Options {
        persistent: true,
        ..Options::default()
    }) else {
        return;
    };
    let url = redis.url("");
    let s = Sandbox::with_limits(":4\n");
    for _ in 0..3 {
        assert_eq!(
            s.user("a@example.com").env("OVERLIMIT_REDIS", &url).code(),
            112
        );
    }
    redis.restart();
    assert_eq!(
        s.user("a@example.com").env("OVERLIMIT_REDIS", &url).code(),
        112
    );
    assert_eq!(
        s.user("a@example.com").env("OVERLIMIT_REDIS", &url).code(),
        113
    );
}

#[test]
fn a_bad_address_is_an_internal_error_naming_the_variable() {
    let s = Sandbox::with_limits(":5\n");
    let o = s
        .user("a@example.com")
        .env("OVERLIMIT_REDIS", "rediss://h")
        .run();
    assert_eq!(o.code, Some(112), "{o:?}");
    assert!(o.stderr.contains("OVERLIMIT_REDIS: TLS"), "{o:?}");
    let o = s
        .admin(&["status"])
        .env("OVERLIMIT_REDIS", "redis://h:0")
        .run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("OVERLIMIT_REDIS: port"), "{o:?}");
}

// ---- One arithmetic: both backends decide alike -------------------------------------

/// One step of a random sequence.
#[derive(Clone, Debug)]
enum Step {
    /// `n` recipients for client `who`, `after` ms after the last step.
    Admit { who: usize, n: u64, after: u64 },
    /// Give back the last accepted admission.
    Refund,
    /// The sweep, over every counter.
    Sweep,
    /// The clock stepped back this many ms.
    Back(u64),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        12 => (0usize..4, 1u64..4, 0u64..3_000).prop_map(|(who, n, after)| Step::Admit { who, n, after }),
        1 => Just(Step::Refund),
        1 => Just(Step::Sweep),
        1 => (1u64..5_000).prop_map(Step::Back),
    ]
}

#[test]
fn both_backends_decide_every_random_sequence_alike() {
    use overlimit::backend::Store;
    use overlimit::time::Time;
    use proptest::test_runner::{Config, TestRunner};
    let Some(redis) = server(Options::default()) else {
        return;
    };
    let control = "@example.com:7,5/10s\n*@example.com:3/2s,6/1m\n192.0.2.0/24:4/5s\n:9\n";
    let names = [
        "a@example.com",
        "b@example.com",
        "c@example.org",
        "192.0.2.1",
    ];
    let url = redis.url("");
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let sequences = proptest::collection::vec(step(), 1..60);
    runner
        .run(&sequences, |steps| {
            assert_eq!(redis.raw("FLUSHDB"), "+OK");
            let s = Sandbox::with_limits(control);
            let mut files = Store::Files(s.dir());
            let mut shared = Store::open(&s.dir(), Some(&url)).unwrap();
            let targets: Vec<_> = names
                .iter()
                .map(|n| {
                    let c = overlimit::client::Client::from_name(n.as_bytes()).unwrap();
                    let r = overlimit::lookup::resolve(&s.control(), &c, &mut Vec::new()).unwrap();
                    overlimit::admit::targets(&c, &r)
                })
                .collect();
            let mut now = 1_700_000_000_000u64;
            let mut last = None;
            let far = Instant::now() + Duration::from_secs(10);
            for step in steps {
                match step {
                    Step::Admit { who, n, after } => {
                        now += after;
                        let t = Time::from_millis(now);
                        let a =
                            overlimit::admit::admit_n(&mut files, &targets[who], t, far, false, n)
                                .unwrap();
                        let b =
                            overlimit::admit::admit_n(&mut shared, &targets[who], t, far, false, n)
                                .unwrap();
                        assert_eq!(a.accepted(), b.accepted());
                        assert_eq!((&a.full, &a.newly_full), (&b.full, &b.newly_full));
                        if a.accepted() {
                            last = Some((who, n, t));
                        }
                    }
                    Step::Refund => {
                        if let Some((who, n, t)) = last.take() {
                            overlimit::admit::refund(&mut files, &targets[who], t, n, far).unwrap();
                            overlimit::admit::refund(&mut shared, &targets[who], t, n, far)
                                .unwrap();
                        }
                    }
                    Step::Sweep => {
                        let t = Time::from_millis(now);
                        let listed = files.files(far).unwrap();
                        assert_eq!(listed, shared.files(far).unwrap());
                        for f in &listed {
                            let a = overlimit::sweep::sweep_one(&mut files, f, None, t).unwrap();
                            let b = overlimit::sweep::sweep_one(&mut shared, f, None, t).unwrap();
                            assert_eq!(a, b, "{f}");
                        }
                    }
                    Step::Back(ms) => now -= ms,
                }
            }
            let listed = files.files(far).unwrap();
            assert_eq!(listed, shared.files(far).unwrap(), "the same counters");
            // `refund` expires windows to the real clock, read twice, so an
            // empty window's index may differ by a bucket; nothing else may.
            let settled = |c: Option<Counter>| {
                c.map(|mut c| {
                    for w in c.windows.iter_mut().filter(|w| w.counts.is_empty()) {
                        w.first = 0;
                    }
                    c
                })
            };
            for f in &listed {
                let (a, b) = (files.read(f, far).unwrap(), shared.read(f, far).unwrap());
                assert_eq!(settled(a), settled(b), "{f}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn check_says_whether_the_server_answers() {
    let Some(mut redis) = server(Options::default()) else {
        return;
    };
    let s = Sandbox::with_limits(":5\n");
    let o = s
        .admin(&["check"])
        .env("OVERLIMIT_REDIS", redis.url(""))
        .run();
    assert_eq!(o.code, Some(0), "{o:?}");
    redis.freeze();
    let o = s
        .admin(&["check"])
        .env("OVERLIMIT_REDIS", redis.url("timeout=200"))
        .run();
    redis.thaw();
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("no answer within the deadline"), "{o:?}");
    assert!(
        o.stdout.contains("server (OVERLIMIT_REDIS) cannot be used"),
        "{o:?}"
    );
}

/// The `total_connections_received` the server counts.
fn connections(redis: &RedisServer) -> u64 {
    let info = redis.raw("INFO stats");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{info}"))
}

#[test]
fn the_policy_service_shares_the_count_and_keeps_its_connection() {
    let Some(mut redis) = server(Options::default()) else {
        return;
    };
    let url = redis.url("");
    let s = Sandbox::with_limits("alice@example.com:3/1h\n");
    let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
        ("RELAYLIMITS".into(), s.control().into()),
        ("OVERLIMITDIR".into(), s.dir().into()),
        ("OVERLIMIT_REDIS".into(), url.clone().into()),
    ];
    let socket = policy::socket_in(&s.root);
    let daemon = policy::Daemon::unix(&env, &socket);
    let mut peer = policy::Peer::unix(&socket);
    assert_eq!(
        peer.ask(&policy::rcpt("alice@example.com")).as_deref(),
        Some("DUNNO")
    );
    let before = connections(&redis);
    assert_eq!(
        peer.ask(&policy::rcpt("alice@example.com")).as_deref(),
        Some("DUNNO")
    );
    // The plug-in on another host counts the third; the daemon refuses the fourth.
    assert_eq!(
        s.user("alice@example.com")
            .env("OVERLIMIT_REDIS", &url)
            .code(),
        112
    );
    let refused = peer.ask(&policy::rcpt("alice@example.com")).unwrap();
    assert!(refused.starts_with("450 4.7.1 "), "{refused}");
    // One connection for each `raw` and the plug-in's: none new from the daemon.
    assert_eq!(
        connections(&redis) - before,
        2,
        "the daemon kept its connection"
    );
    assert!(s.counter_files().is_empty());
    // A stopped server: the answer still comes within the deadline (DUNNO,
    // failing open), and once it runs again a new connection serves.
    redis.freeze();
    let started = Instant::now();
    let answer = peer.ask(&policy::rcpt("bob@example.com"));
    redis.thaw();
    assert_eq!(answer.as_deref(), Some("DUNNO"));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let refused = peer.ask(&policy::rcpt("alice@example.com")).unwrap();
    assert!(refused.starts_with("450 4.7.1 "), "{refused}");
    let f = daemon.stop();
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(
        f.stderr.contains("no answer within the deadline"),
        "{}",
        f.stderr
    );
}

#[test]
fn migrate_moves_every_count_into_the_server_adding_to_what_is_there_once() {
    let Some(redis) = server(Options::default()) else {
        return;
    };
    let url = redis.url("");
    let limits = "a@example.com:5\nb@example.com:3/1h\nc@example.com:1\n:100\n";
    // One host counted in files so far; another already counts in Redis.
    let (files, shared) = (Sandbox::with_limits(limits), Sandbox::with_limits(limits));
    let on_redis = |user: &str| shared.user(user).env("OVERLIMIT_REDIS", &url).code();
    for (user, times) in [
        ("a@example.com", 3),
        ("b@example.com", 2),
        ("c@example.com", 2),
    ] {
        for _ in 0..times {
            files.user(user).code();
        }
    }
    assert_eq!(on_redis("a@example.com"), 112);
    assert_eq!(on_redis("b@example.com"), 112);
    assert_eq!(files.counter_files().len(), 3);

    let o = files.admin(&["migrate"]).run();
    assert_eq!(o.code, Some(2), "no server named: {o:?}");
    assert!(o.stderr.contains("OVERLIMIT_REDIS"), "{o:?}");
    assert_eq!(files.counter_files().len(), 3, "nothing moved");

    let migrate = || files.admin(&["migrate"]).env("OVERLIMIT_REDIS", &url).run();
    let o = migrate();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("migrated 3 counters"), "{o:?}");
    assert!(files.counter_files().is_empty(), "{o:?}");
    let o = migrate();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("migrated 0 counters"), "run twice: {o:?}");

    // Totals, windows and refusals were added, not written over.
    let status = |who: &str, key: &str| {
        let o = shared
            .admin(&["status", "--json", who])
            .env("OVERLIMIT_REDIS", &url)
            .run();
        assert_eq!(o.code, Some(0), "{o:?}");
        json_number(&o.stdout, key)
    };
    assert_eq!(status("a@example.com", "count"), 4);
    assert_eq!(status("c@example.com", "refused"), 1);
    assert_eq!(on_redis("a@example.com"), 112, "the 5th of 5");
    assert_eq!(on_redis("a@example.com"), 113);
    assert_eq!(on_redis("b@example.com"), 113, "3 of 3 in the hour");
    assert_eq!(on_redis("c@example.com"), 113);

    // A file that is no counter is named and left where it is.
    std::fs::write(files.dir().join("d@example.com"), "garbage\n").unwrap();
    let o = migrate();
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains("d@example.com") && o.stderr.contains("not a counter"),
        "{o:?}"
    );
    assert_eq!(files.counter_files(), ["d@example.com"]);
}

#[test]
fn with_fallback_an_outage_counts_locally_against_a_share_of_the_limit() {
    let Some(mut redis) = server(Options::default()) else {
        return;
    };
    // Two hosts share a limit of 7: each may send 3 while the server is
    // away. A stopped server is waited for 200 ms, then given up.
    let shared = redis.url("");
    let url = format!("{shared}?timeout=200&fallback=2");
    let s = Sandbox::with_limits("a@example.com:7\n:100\n");
    let send = |url: &str| s.user("a@example.com").env("OVERLIMIT_REDIS", url).run();
    assert_eq!(send(&url).code, Some(112));
    assert!(s.counter_files().is_empty(), "counted in the server");
    let local = |what: &str, code: i32| {
        let o = send(&url);
        assert_eq!(o.code, Some(code), "{what}: {o:?}");
        assert_eq!(
            o.stderr.matches("against 1/2 of each limit").count(),
            1,
            "{what}: logged once, as what it is: {o:?}"
        );
        assert!(
            o.stderr.contains("redis") && !o.stderr.contains("internal error"),
            "{what}: {o:?}"
        );
        assert!(o.elapsed < Duration::from_millis(1500), "{what}: {o:?}");
    };
    redis.freeze();
    local("stopped", 112);
    local("stopped", 112);
    redis.kill();
    local("killed", 112);
    local("killed", 113);
    assert_eq!(s.counter_files(), ["a@example.com"]);
    // Without the setting, an outage is an internal error as before.
    for (failclosed, code) in [("", 112), ("1", 111)] {
        let o = s
            .user("a@example.com")
            .env("OVERLIMIT_REDIS", &shared)
            .env("OVERLIMIT_FAILCLOSED", failclosed)
            .run();
        assert_eq!(o.code, Some(code), "{o:?}");
        assert!(o.stderr.contains("internal error"), "{o:?}");
    }
    // Back again (its one count lost: no persistence here), the server
    // takes the local counts by `migrate`: 3 of 7, the directory empty.
    redis.restart();
    let o = s.admin(&["migrate"]).env("OVERLIMIT_REDIS", &url).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(s.counter_files().is_empty(), "{o:?}");
    let codes: Vec<Option<i32>> = (0..5).map(|_| send(&url).code).collect();
    assert_eq!(
        codes,
        [Some(112); 4]
            .into_iter()
            .chain([Some(113)])
            .collect::<Vec<_>>()
    );
    assert!(s.counter_files().is_empty(), "counted in the server again");
}

//! A concurrency soak: many plug-ins at once over several clients and a
//! domain's shared counter while `overlimit-sweep` runs again and again. The
//! limits are windows, which the sweep leaves alone, so the totals at the end
//! are exact: each client's window holds exactly its accepted recipients, a
//! limited client got exactly its limit, the domain's exactly the sum.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

const LIMITS: &str = "\
*@soak.example:1000000/1h
@soak.example:1000000/1h
u1@soak.example:70/1h
u2@soak.example:200/1h
u3@soak.example:25/1h,1000000
192.0.2.0/24:30/1h
";

/// Clients and their window limit (0: one never reached). 198.51.100.9 has no line
/// and no window: the sweep removes its counter over and over while the
/// plug-ins count on it.
const CLIENTS: [(&str, u64); 8] = [
    ("u0@soak.example", 0),
    ("u1@soak.example", 70),
    ("u2@soak.example", 200),
    ("u3@soak.example", 25),
    ("u4@soak.example", 0),
    ("192.0.2.5", 30),
    ("192.0.2.6", 30),
    ("198.51.100.9", 0),
];
const WORKERS: usize = 8;
const CALLS: usize = 240;

/// The count in a client's 1h window.
fn window(s: &Sandbox, client: &str) -> u64 {
    let json = s.status_json(client);
    let w = json
        .split("{\"period\":3600,")
        .nth(1)
        .unwrap_or_else(|| panic!("no 1h window for {client}: {json}"));
    json_number(w, "count")
}

#[test]
fn exact_totals_after_a_soak_of_plugins_and_sweeps() {
    let s = Sandbox::with_limits(LIMITS);
    // Under FAILCLOSED an internal error answers 111, so 112 means counted.
    let call = |client: &str| {
        let run = if client.contains('@') {
            s.user(client)
        } else {
            s.ip(client)
        };
        run.env("OVERLIMIT_FAILCLOSED", "1").run()
    };
    let answers: Mutex<BTreeMap<(&str, i32), u64>> = Mutex::new(BTreeMap::new());
    let done = AtomicBool::new(false);
    let sweeps = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let sweeper = scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let keep = sweeps.load(Ordering::SeqCst) % 2 == 1;
                let o = s
                    .sweep(if keep { &["--keep-overlimit"] } else { &[] })
                    .run();
                assert_eq!(o.code, Some(0), "{o:?}");
                sweeps.fetch_add(1, Ordering::SeqCst);
            }
        });
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (call, answers) = (&call, &answers);
                scope.spawn(move || {
                    for i in 0..CALLS {
                        let (client, _) = CLIENTS[(w + i) % CLIENTS.len()];
                        let o = call(client);
                        let code = o.code.unwrap_or_else(|| panic!("{o:?}"));
                        assert!(code == 112 || code == 113, "{client}: {o:?}");
                        *answers.lock().unwrap().entry((client, code)).or_default() += 1;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        sweeper.join().unwrap();
    });
    let answers = answers.into_inner().unwrap();
    let got = |client, code| answers.get(&(client, code)).copied().unwrap_or(0);
    assert!(
        sweeps.load(Ordering::SeqCst) >= 5,
        "the sweep ran throughout"
    );
    let mut domain_sum = 0;
    for (client, limit) in CLIENTS {
        let (accepted, refused) = (got(client, 112), got(client, 113));
        let attempts = (WORKERS * CALLS / CLIENTS.len()) as u64;
        assert_eq!(accepted + refused, attempts, "{client}");
        if limit > 0 {
            assert_eq!(accepted, limit, "{client}: exactly its limit");
        } else {
            assert_eq!(refused, 0, "{client}: never at its limit");
        }
        if client != "198.51.100.9" {
            assert_eq!(window(&s, client), accepted, "{client}: its window");
        }
        if client.ends_with("@soak.example") {
            domain_sum += accepted;
        }
    }
    assert_eq!(
        window(&s, "@soak.example"),
        domain_sum,
        "the domain's window"
    );
}

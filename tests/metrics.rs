//! `overlimit metrics` and `overlimit-policy --metrics`, parsed by a real
//! Prometheus parser: Debian's python3-prometheus-client
//! (`text_string_to_metric_families`), the parser of the Prometheus
//! project's own Python client, a few hundred kilobytes where promtool
//! would bring the whole Prometheus server.

mod common;
#[path = "support/process.rs"]
mod process;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

/// Each sample as `name{label="value",...}` (labels sorted) and its value;
/// `None` (after a skip) where the parser is not installed. A text the
/// parser rejects fails the test.
fn parse(text: &str) -> Option<BTreeMap<String, f64>> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    assert family.type == "gauge", family
    assert family.documentation, family
    for s in family.samples:
        labels = ",".join('%s=%r' % kv for kv in sorted(s.labels.items()))
        print("%s{%s}\t%r" % (s.name, labels, s.value))
"#;
    let probe = Command::new(PYTHON)
        .args(["-c", "import prometheus_client.parser"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        skip("no python3-prometheus-client (apt-get install python3-prometheus-client)");
        return None;
    }
    let mut parser = Command::new(PYTHON);
    parser.args(["-c", script]);
    let out = process::feed(parser, text.as_bytes());
    assert_eq!(
        out.code,
        Some(0),
        "the Prometheus parser rejects the text:\n{}\n{text}",
        out.stderr
    );
    let samples = out.stdout;
    Some(
        samples
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('\t').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect(),
    )
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

/// Per-client series of one metric, by client.
fn clients(samples: &BTreeMap<String, f64>, metric: &str) -> Vec<String> {
    let prefix = format!("{metric}{{client='");
    samples
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .map(|k| k.split('\'').next().unwrap().to_string())
        .collect()
}

/// Alice is over her classic limit of 2 (one refused), shop.example's
/// users share a counter of 3 that is full, an address has room.
fn busy_sandbox() -> Sandbox {
    let s = Sandbox::with_limits(":100\nalice@example.com:2\n@shop.example:3\n");
    for _ in 0..3 {
        s.user("alice@example.com").code();
    }
    for user in ["a@shop.example", "b@shop.example", "a@shop.example"] {
        assert_eq!(s.user(user).code(), 112);
    }
    assert_eq!(s.user("b@shop.example").code(), 113);
    assert_eq!(s.ip("192.0.2.7").code(), 112);
    s
}

#[test]
fn metrics_parse_and_say_who_is_over() {
    let s = busy_sandbox();
    let o = s.admin(&["metrics"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    let Some(m) = parse(&o.stdout) else { return };
    assert_eq!(value(&m, "overlimit_counters{kind='user'}"), 3.0);
    assert_eq!(value(&m, "overlimit_counters{kind='address'}"), 1.0);
    assert_eq!(value(&m, "overlimit_counters{kind='domain'}"), 1.0);
    assert_eq!(value(&m, "overlimit_counters{kind='range'}"), 0.0);
    // alice on her own limit; a@ and b@ through their domain's counter.
    assert_eq!(value(&m, "overlimit_over_limit{kind='user'}"), 3.0);
    assert_eq!(value(&m, "overlimit_over_limit{kind='domain'}"), 1.0);
    assert_eq!(value(&m, "overlimit_over_limit{kind='address'}"), 0.0);
    // 2 (alice) + 3 (shop users) + 1 (the address); the domain's own
    // counter is not added again.
    assert_eq!(value(&m, "overlimit_recipients{}"), 6.0);
    assert_eq!(value(&m, "overlimit_refused{}"), 2.0);
    assert_eq!(value(&m, "overlimit_counter_errors{}"), 0.0);
    let alice = "client='alice@example.com',kind='user'";
    assert_eq!(
        value(&m, &format!("overlimit_client_recipients{{{alice}}}")),
        2.0
    );
    assert_eq!(
        value(&m, &format!("overlimit_client_refused{{{alice}}}")),
        1.0
    );
    assert_eq!(
        value(&m, &format!("overlimit_client_over_limit{{{alice}}}")),
        1.0
    );
    let address = "client='192.0.2.7',kind='address'";
    assert_eq!(
        value(&m, &format!("overlimit_client_over_limit{{{address}}}")),
        0.0
    );
}

#[test]
fn per_client_series_are_the_top_n_only_over_limit_first() {
    let s = Sandbox::with_limits(":5\n192.0.2.200:1\n");
    for i in 1..=12 {
        for _ in 0..(i % 4 + 1) {
            assert_eq!(s.ip(&format!("192.0.2.{i}")).code(), 112);
        }
    }
    // The one over its limit has the smallest count of all.
    s.ip("192.0.2.200").code();
    s.ip("192.0.2.200").code();
    let o = s.admin(&["metrics", "--top", "3"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    let Some(m) = parse(&o.stdout) else { return };
    assert_eq!(value(&m, "overlimit_counters{kind='address'}"), 13.0);
    assert_eq!(value(&m, "overlimit_top_clients{}"), 3.0);
    for metric in [
        "overlimit_client_recipients",
        "overlimit_client_refused",
        "overlimit_client_over_limit",
    ] {
        let top = clients(&m, metric);
        assert_eq!(top.len(), 3, "{metric}: {top:?}");
        assert!(top.contains(&"192.0.2.200".to_string()), "{top:?}");
    }
    let none = s.admin(&["metrics", "--top", "0"]).run();
    let Some(m) = parse(&none.stdout) else { return };
    assert!(clients(&m, "overlimit_client_recipients").is_empty());
    // The default keeps the number bounded too.
    let default = s.admin(&["metrics"]).run();
    let Some(m) = parse(&default.stdout) else {
        return;
    };
    assert_eq!(clients(&m, "overlimit_client_recipients").len(), 10);
}

#[test]
fn client_names_with_quotes_and_backslashes_stay_one_label() {
    let s = Sandbox::with_limits(":0\n");
    let odd = "we\"ird\\name@example.com";
    assert_eq!(s.user(odd).code(), 112);
    let o = s.admin(&["metrics"]).run();
    let Some(m) = parse(&o.stdout) else { return };
    // The name as `overlimit status` prints it (a backslash is `\x5c`,
    // as `reset` takes it), in Python's repr: single quotes, the backslash
    // doubled, the double quote as is.
    let key = "overlimit_client_recipients{client='we\"ird\\\\x5cname@example.com',kind='user'}";
    assert_eq!(value(&m, key), 1.0, "{m:#?}");
}

#[test]
fn an_unreadable_counter_is_counted_named_and_exits_2() {
    let s = busy_sandbox();
    std::fs::write(s.dir().join("broken@example.com"), "not a counter\n").unwrap();
    let o = s.admin(&["metrics"]).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("broken@example.com"), "{o:?}");
    let Some(m) = parse(&o.stdout) else { return };
    assert_eq!(value(&m, "overlimit_counter_errors{}"), 1.0);
    assert_eq!(value(&m, "overlimit_counters{kind='user'}"), 3.0);
}

#[test]
fn output_is_written_whole_by_a_rename() {
    let s = busy_sandbox();
    let out_dir = s.root.join("textfile");
    std::fs::create_dir(&out_dir).unwrap();
    let file = out_dir.join("overlimit.prom");
    std::fs::write(&file, "old\n").unwrap();
    let o = s
        .admin(&["metrics", "--output", file.to_str().unwrap()])
        .run();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
    let names: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(names.len(), 1, "a temporary file was left: {names:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let Some(m) = parse(&text) else { return };
    assert_eq!(value(&m, "overlimit_counters{kind='user'}"), 3.0);
    // A directory that is not there: an error naming the file.
    let missing = s.root.join("nowhere/overlimit.prom");
    let o = s
        .admin(&["metrics", "--output", missing.to_str().unwrap()])
        .run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("nowhere"), "{o:?}");
}

#[test]
fn bad_flags_are_named() {
    let s = Sandbox::new();
    for (args, named) in [
        (&["metrics", "--top", "many"][..], "--top many"),
        (&["metrics", "--top"][..], "--top needs a value"),
        (&["metrics", "--top", "1", "--top", "2"][..], "given twice"),
        (&["metrics", "extra"][..], "unexpected argument extra"),
    ] {
        let o = s.admin(args).run();
        assert_eq!(o.code, Some(2), "{args:?}: {o:?}");
        assert!(o.stderr.contains(named), "{args:?}: {o:?}");
    }
    let missing = Sandbox::new();
    std::fs::remove_dir(missing.dir()).unwrap();
    let o = missing.admin(&["metrics"]).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("overlimit"), "{o:?}");
}

/// A port that was free a moment ago on the loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP GET; the status line and the body.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(HANG)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    Some((head.lines().next().unwrap().to_string(), body.to_string()))
}

#[test]
fn the_policy_daemon_serves_the_same_metrics_on_http() {
    let s = busy_sandbox();
    let port = free_port();
    let socket = s.root.join("policy.sock");
    let address = format!("127.0.0.1:{port}");
    let daemon = Run::new(env!("CARGO_BIN_EXE_overlimit-policy"))
        .env("RELAYLIMITS", s.control())
        .env("OVERLIMITDIR", s.dir())
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .args(&["--metrics", &address, "--metrics-top", "2"])
        .spawn();
    let deadline = Instant::now() + HANG;
    let answer = loop {
        if let Some(a) = get(port, "/metrics") {
            break a;
        }
        assert!(Instant::now() < deadline, "no HTTP answer on {address}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(answer.0, "HTTP/1.1 200 OK");
    let not_found = get(port, "/other").unwrap();
    // SAFETY: kill(2) on the daemon's pid, which we started and have not
    // waited for, so it cannot be reused.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let ended = daemon.finish();
    assert_eq!(ended.code, Some(0), "{ended:?}");
    assert!(not_found.0.starts_with("HTTP/1.1 404"), "{not_found:?}");
    let Some(m) = parse(&answer.1) else { return };
    assert_eq!(value(&m, "overlimit_over_limit{kind='user'}"), 3.0);
    assert_eq!(value(&m, "overlimit_top_clients{}"), 2.0);
    assert_eq!(clients(&m, "overlimit_client_recipients").len(), 2);
}

#[test]
fn policy_metrics_need_a_daemon_and_an_address() {
    for (args, named) in [
        (
            &["--metrics", "127.0.0.1:1"][..],
            "--metrics needs --listen",
        ),
        (
            &["--listen", "unix:/nonexistent/x", "--metrics", "nohost"][..],
            "--metrics nohost",
        ),
        (
            &["--listen", "unix:/nonexistent/x", "--metrics"][..],
            "--metrics needs HOST:PORT",
        ),
    ] {
        let o = Run::new(env!("CARGO_BIN_EXE_overlimit-policy"))
            .args(args)
            .run();
        assert_eq!(o.code, Some(2), "{args:?}: {o:?}");
        assert!(o.stderr.contains(named), "{args:?}: {o:?}");
    }
}

#[test]
fn the_example_alert_rules_name_only_metrics_that_exist() {
    let s = busy_sandbox();
    let o = s.admin(&["metrics"]).run();
    let Some(m) = parse(&o.stdout) else { return };
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("control-examples/overlimit-alerts.yml");
    // Read as YAML, as Prometheus does, and each rule's expression taken apart.
    let script = r#"
import re, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for group in doc["groups"]:
    for rule in group["rules"]:
        assert rule["alert"] and rule["expr"], rule
        for name in re.findall(r"overlimit_[a-z_]+", rule["expr"]):
            print(rule["alert"], name)
"#;
    let probe = Command::new(PYTHON).args(["-c", "import yaml"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        return skip("no python3-yaml");
    }
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used = String::from_utf8(out.stdout).unwrap();
    assert!(used.lines().count() >= 5, "{used}");
    for line in used.lines() {
        let (alert, name) = line.split_once(' ').unwrap();
        assert!(
            m.keys().any(|k| k.starts_with(&format!("{name}{{"))),
            "{alert} uses {name}, which overlimit metrics does not write"
        );
    }
}

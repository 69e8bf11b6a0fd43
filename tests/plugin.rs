//! Pins the plug-in's side of the spec (Programs, Environment, Exit codes, The
//! control file, Counters, Logs) by running `rcptcheck-overlimit` the way
//! qmail-smtpd runs it: one test, or one table of cases, per statement.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// The names in a directory.
fn entries(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// Asserts that `o` logged exactly one line, from the plug-in, and returns it.
fn one_log_line(o: &Outcome) -> &str {
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one log line: {o:?}");
    assert!(
        lines[0].starts_with("rcptcheck-overlimit: "),
        "log line without the program's name: {o:?}"
    );
    lines[0]
}

/// Asserts a quiet pass: 112, nothing logged, nothing on fd 4.
fn passes(run: Run) {
    let o = run.run();
    assert_eq!(
        (o.code, o.stderr.as_str(), o.fd4.as_str()),
        (Some(112), "", ""),
        "{o:?}"
    );
}

/// Asserts a refusal: 113 with one log line; returns the line.
fn refused(run: Run) -> String {
    let o = run.run();
    assert_eq!(o.code, Some(113), "{o:?}");
    one_log_line(&o).to_string()
}

// ---- Who is counted -------------------------------------------------------

#[test]
fn clients_that_are_not_relay_clients_pass_before_any_file_is_touched() {
    let s = Sandbox::new();
    let before = entries(&s.root);
    // The counter directory does not exist and the control file is a
    // directory: a plug-in that looked at either would log an error.
    for failclosed in ["", "1"] {
        let o = Run::new(PLUGIN)
            .env("RELAYLIMITS", s.dir())
            .env("OVERLIMITDIR", s.root.join("missing"))
            .env("USE_FD4", "1")
            .env("OVERLIMIT_FAILCLOSED", failclosed)
            .env("SMTPAUTHUSER", "a@example.com")
            .env("TCPREMOTEIP", "192.0.2.1")
            .run();
        assert_eq!(
            (o.code, o.stderr.as_str(), o.fd4.as_str()),
            (Some(112), "", ""),
            "{o:?}"
        );
    }
    assert_eq!(entries(&s.root), before);
    assert!(s.counter_files().is_empty());
}

#[test]
fn a_non_relay_client_over_its_limit_is_neither_refused_nor_counted() {
    let s = Sandbox::with_limits(":1\n");
    std::fs::write(s.dir().join("192.0.2.1"), "XXXXX").unwrap();
    passes(s.plugin().env("TCPREMOTEIP", "192.0.2.1"));
    assert_eq!(s.counter("192.0.2.1").unwrap(), b"XXXXX");
}

#[test]
fn relayclient_set_but_empty_is_a_relay_client() {
    let s = Sandbox::with_limits(":1\n");
    let run = || {
        s.plugin()
            .env("RELAYCLIENT", "")
            .env("TCPREMOTEIP", "192.0.2.1")
    };
    passes(run());
    refused(run());
    assert_eq!(s.total("192.0.2.1"), Some(1));
}

#[test]
fn recipients_in_rcpthosts_are_neither_counted_nor_refused() {
    let s = Sandbox::with_limits(":1\n");
    for _ in 0..3 {
        passes(s.ip("192.0.2.1").env("RCPTHOSTS", "1"));
    }
    assert!(s.counter_files().is_empty());
    // Even a client at its limit may still send to local recipients.
    passes(s.ip("192.0.2.1"));
    passes(s.ip("192.0.2.1").env("RCPTHOSTS", "1"));
    assert_eq!(s.total("192.0.2.1"), Some(1));
}

#[test]
fn an_empty_rcpthosts_is_not_a_local_recipient() {
    let s = Sandbox::with_limits(":1\n");
    passes(s.ip("192.0.2.1").env("RCPTHOSTS", ""));
    refused(s.ip("192.0.2.1").env("RCPTHOSTS", ""));
}

#[test]
fn the_client_is_the_auth_user_else_the_remote_address() {
    let auth = "u1@example.com";
    let auth2 = "u2@example.com";
    let (ip4, ip6) = ("192.0.2.1", "2001:db8::1");
    // (SMTPAUTHUSER, SMTP_AUTH_USER, TCPREMOTEIP, TCP6REMOTEIP) -> counter.
    let cases: [([Option<&str>; 4], &str); 6] = [
        ([Some(auth), Some(auth2), Some(ip4), Some(ip6)], auth),
        ([None, Some(auth2), Some(ip4), Some(ip6)], auth2),
        ([Some(""), Some(auth2), Some(ip4), Some(ip6)], auth2),
        ([Some(""), Some(""), Some(ip4), Some(ip6)], ip4),
        ([None, None, Some(ip4), Some(ip6)], ip4),
        ([Some(""), None, None, Some(ip6)], ip6),
    ];
    let names = [
        "SMTPAUTHUSER",
        "SMTP_AUTH_USER",
        "TCPREMOTEIP",
        "TCP6REMOTEIP",
    ];
    for (values, want) in cases {
        let s = Sandbox::with_limits(":5\n");
        let mut run = s.plugin().env("RELAYCLIENT", "");
        for (name, value) in names.iter().zip(values) {
            if let Some(v) = value {
                run = run.env(name, v);
            }
        }
        passes(run);
        assert_eq!(s.counter_files(), [want], "{values:?}");
    }
}

#[test]
fn a_relay_client_without_any_name_is_an_internal_error() {
    let s = Sandbox::with_limits(":5\n");
    for (failclosed, code) in [("", 112), ("1", 111)] {
        let o = s
            .plugin()
            .env("RELAYCLIENT", "")
            .env("SMTPAUTHUSER", "")
            .env("OVERLIMIT_FAILCLOSED", failclosed)
            .run();
        assert_eq!(o.code, Some(code), "{o:?}");
        one_log_line(&o);
        assert_eq!(o.fd4, "");
    }
    assert!(s.counter_files().is_empty());
}

#[test]
fn an_ipv4_address_mapped_into_ipv6_is_the_ipv4_client() {
    let s = Sandbox::with_limits("192.0.2.1:2\n");
    passes(
        s.plugin()
            .env("RELAYCLIENT", "")
            .env("TCP6REMOTEIP", "::ffff:192.0.2.1"),
    );
    passes(s.ip("::FFFF:192.0.2.1"));
    refused(s.ip("192.0.2.1"));
    assert_eq!(s.counter_files(), ["192.0.2.1"]);
}

#[test]
fn ipv6_addresses_compare_in_canonical_form() {
    let s = Sandbox::with_limits("2001:db8::7:1\n");
    passes(s.ip("2001:DB8:0::7"));
    let line = refused(s.ip("2001:0db8:0:0:0:0:0:0007"));
    assert!(line.contains("2001:db8::7"), "{line}");
    assert_eq!(s.counter_files(), ["2001:db8::7"]);
    // A line written in a long form matches the canonical client too.
    let s = Sandbox::with_limits("2001:DB8:0:0::8:1\n");
    passes(s.ip("2001:db8::8"));
    refused(s.ip("2001:db8::8"));
}

// ---- The control file -----------------------------------------------------

#[test]
fn seed_bug_info_at_example_com_does_not_limit_testinfo_at_example_com() {
    // The seed script grepped for `CLIENT:` anywhere in a line, so a line
    // also limited every client whose name ends another line's name.
    let s = Sandbox::with_limits("info@example.com:1\n");
    for _ in 0..3 {
        passes(s.user("testinfo@example.com"));
    }
    passes(s.user("info@example.com"));
    refused(s.user("info@example.com"));

    let s = Sandbox::with_limits("testinfo@example.com:1\n110.0.0.1:1\n");
    for _ in 0..3 {
        passes(s.user("info@example.com"));
        passes(s.ip("10.0.0.1"));
    }
}

#[test]
fn clients_match_case_insensitively() {
    let s = Sandbox::with_limits("Info@Example.COM:1\n");
    passes(s.user("INFO@example.com"));
    refused(s.user("info@EXAMPLE.com"));
    assert_eq!(s.counter_files(), ["info@example.com"]);
}

#[test]
fn a_line_splits_at_its_last_colon() {
    let s = Sandbox::with_limits("odd:name@example.com:1\n");
    passes(s.user("odd:name@example.com"));
    refused(s.user("odd:name@example.com"));
    for _ in 0..2 {
        passes(s.user("odd"));
    }
}

#[test]
fn the_default_line_applies_to_clients_without_their_own() {
    let s = Sandbox::with_limits("big@example.com:3\n:1\n");
    passes(s.user("a@example.com"));
    refused(s.user("a@example.com"));
    passes(s.ip("192.0.2.1"));
    refused(s.ip("192.0.2.1"));
    for _ in 0..3 {
        passes(s.user("big@example.com"));
    }
    refused(s.user("big@example.com"));
}

#[test]
fn without_a_default_line_other_clients_are_unlimited_and_still_counted() {
    let s = Sandbox::with_limits("other@example.com:1\n");
    for _ in 0..10 {
        passes(s.user("a@example.com"));
    }
    assert_eq!(s.total("a@example.com"), Some(10));
}

#[test]
fn without_a_control_file_every_client_is_unlimited_and_still_counted() {
    let s = Sandbox::new();
    for _ in 0..10 {
        passes(s.user("a@example.com"));
        passes(s.ip("192.0.2.1"));
    }
    assert_eq!(s.total("a@example.com"), Some(10));
    assert_eq!(s.total("192.0.2.1"), Some(10));
}

#[test]
fn zero_means_unlimited() {
    let s = Sandbox::with_limits("b@example.com:0\n:1\n");
    for _ in 0..5 {
        passes(s.user("b@example.com"));
    }
    passes(s.user("c@example.com"));
    refused(s.user("c@example.com"));
    let s = Sandbox::with_limits(":0\n");
    for _ in 0..5 {
        passes(s.user("c@example.com"));
    }
    assert_eq!(s.total("c@example.com"), Some(5));
}

#[test]
fn the_last_line_for_a_client_wins() {
    for (text, n) in [
        ("a@example.com:1\nA@Example.com:3\n", 3),
        ("a@example.com:3\na@example.com:1\n", 1),
        (":5\n:2\n", 2),
    ] {
        let s = Sandbox::with_limits(text);
        for _ in 0..n {
            passes(s.user("a@example.com"));
        }
        refused(s.user("a@example.com"));
    }
}

#[test]
fn comments_blank_lines_white_space_and_crs_are_ignored() {
    let s = Sandbox::with_limits(
        "# the default:1\r\n\r\n \t \r\n  a@example.com \t: 2   # two\r\n#b@example.com:1\r\n:1 0\r\n",
    );
    for _ in 0..2 {
        passes(s.user("a@example.com"));
    }
    refused(s.user("a@example.com"));
    // `#b@example.com:1` is a comment, and `:1 0` is the default 10.
    for _ in 0..10 {
        passes(s.user("b@example.com"));
    }
    refused(s.user("b@example.com"));
}

#[test]
fn a_bad_line_is_skipped_and_logged_while_the_others_still_apply() {
    let s = Sandbox::with_limits(
        ":2\na@example.com:lots\nno colon here\nb@example.com:1\nb@example.com:1/1x\n",
    );
    let control = s.control().display().to_string();
    let o = s.user("a@example.com").run();
    assert_eq!(o.code, Some(112), "{o:?}");
    assert!(
        o.stderr
            .lines()
            .all(|l| l.starts_with("rcptcheck-overlimit: ")),
        "{o:?}"
    );
    assert!(
        o.stderr
            .lines()
            .any(|l| l.contains(&control) && l.contains("line 2")),
        "the bad line for this client is logged: {o:?}"
    );
    // The default still holds for the client of the bad line...
    assert_eq!(s.user("a@example.com").code(), 112);
    assert_eq!(s.user("a@example.com").code(), 113);
    // ...and an earlier good line still holds for its client.
    let o = s.user("b@example.com").run();
    assert_eq!(o.code, Some(112), "{o:?}");
    assert!(o.stderr.contains("line 5"), "{o:?}");
    assert_eq!(s.user("b@example.com").code(), 113);
}

// ---- Counting and refusing ------------------------------------------------

#[test]
fn a_limit_of_n_lets_exactly_n_through() {
    for n in [1u64, 3] {
        let s = Sandbox::with_limits(&format!(":{n}\n"));
        for _ in 0..n {
            passes(s.user("a@example.com"));
        }
        for _ in 0..2 {
            let o = s.user("a@example.com").run();
            assert_eq!(o.code, Some(113), "{o:?}");
            let line = one_log_line(&o);
            for part in [
                "a@example.com",
                &format!("limit {n}"),
                &format!("{n} counted"),
            ] {
                assert!(line.contains(part), "{part:?} missing from {line:?}");
            }
            assert_eq!(o.fd4, "", "no reply line unless OVERLIMIT_REPLY is set");
        }
        // A refused recipient raises no count.
        assert_eq!(s.total("a@example.com"), Some(n));
    }
}

#[test]
fn a_reply_line_goes_on_fd4_only_with_a_refusal_and_overlimit_reply() {
    for code in ["421", "451"] {
        let s = Sandbox::with_limits(":1\n");
        passes(s.user("a@example.com").env("OVERLIMIT_REPLY", code));
        let o = s.user("a@example.com").env("OVERLIMIT_REPLY", code).run();
        assert_eq!(o.code, Some(113), "{o:?}");
        assert!(o.fd4.starts_with(&format!("{code} ")), "{o:?}");
        assert!(!o.fd4.trim_end().contains('\n') && o.fd4.len() < 1021);
    }
}

/// The `export NAME=VALUE` lines of a shipped example run script.
fn exports(script: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("control-examples")
        .join(script);
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// With a 421 qmail-smtpd drops the connection in the middle of the
/// transaction: the recipients it had accepted are counted and never queued
/// (limit 3, one message to 5: counter 3, queue empty). So the examples
/// recommend 451, which refuses the fourth and fifth and keeps the session;
/// the message then goes to the three that were counted.
#[test]
fn the_run_script_examples_answer_a_refusal_with_451_so_the_counted_recipients_are_queued() {
    for script in ["qmail-smtpd.run", "qmail-submission.run"] {
        let env = exports(script);
        assert!(
            env.contains(&("OVERLIMIT_REPLY".to_string(), "451".to_string())),
            "{script}: {env:?}"
        );
        let s = Sandbox::with_limits(":3\n");
        let mut session: Vec<Outcome> = Vec::new();
        for _ in 0..5 {
            let run = env
                .iter()
                .fold(s.user("a@example.com"), |run, (k, v)| run.env(k, v));
            session.push(run.run());
        }
        assert_eq!(count(&session, 112), 3, "{session:?}");
        for refusal in &session[3..] {
            assert_eq!(refusal.code, Some(113), "{refusal:?}");
            assert!(
                refusal.fd4.starts_with("451 4.7.1 "),
                "{script}: {refusal:?}"
            );
        }
    }
}

#[test]
fn a_seed_script_x_file_counts_its_size_and_counting_goes_on_from_there() {
    let s = Sandbox::with_limits(":5\n");
    std::fs::write(s.dir().join("a@example.com"), "XXX").unwrap();
    passes(s.user("a@example.com"));
    passes(s.user("a@example.com"));
    refused(s.user("a@example.com"));
    assert_eq!(s.total("a@example.com"), Some(5));
    assert!(!s.counter("a@example.com").unwrap().starts_with(b"X"));
    // A file already over the limit is refused at once, and keeps its count.
    std::fs::write(s.dir().join("192.0.2.1"), "X".repeat(7)).unwrap();
    let line = refused(s.ip("192.0.2.1"));
    assert!(line.contains("7 counted"), "{line}");
    assert_eq!(s.total("192.0.2.1"), Some(7));
    // The seed script's `touch`ed empty file is a count of zero.
    std::fs::write(s.dir().join("b@example.com"), "").unwrap();
    passes(s.user("b@example.com"));
    assert_eq!(s.total("b@example.com"), Some(1));
}

#[test]
fn a_counter_of_the_previous_release_keeps_its_counts_and_is_rewritten_in_the_new_format() {
    let s = Sandbox::with_limits(":5,3/1h\n");
    // Version 1: the 1 h window in buckets of 60 whole seconds, one of them
    // two minutes ago holding 2 recipients; 4 in the classic count.
    let bucket = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 120)
        / 60;
    let body = format!(
        "overlimit 1\nclient a@example.com\ntotal 4\nrefused 0 0\nnotified 0\nwindow 3600 {bucket} 0 2\n"
    );
    let sum = body.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    std::fs::write(
        s.dir().join("a@example.com"),
        format!("{body}end {sum:08x}\n"),
    )
    .unwrap();
    // Both counts went on: the window's 2 (room for one), the classic 4.
    passes(s.user("a@example.com"));
    let line = refused(s.user("a@example.com"));
    assert!(line.contains("limit 5 reached (5 counted"), "{line}");
    assert!(line.contains("limit 3/1h reached (3 counted"), "{line}");
    let text = s.counter("a@example.com").unwrap();
    assert!(
        text.starts_with(b"overlimit 2\n"),
        "{}",
        String::from_utf8_lossy(&text)
    );
}

#[test]
fn ordinary_client_names_are_the_counter_file_names() {
    let s = Sandbox::new();
    for user in ["Info@Example.com", "a_b+c-d@x.example", "web1"] {
        passes(s.user(user));
    }
    for ip in ["192.0.2.1", "2001:db8::7"] {
        passes(s.ip(ip));
    }
    assert_eq!(
        s.counter_files(),
        [
            "192.0.2.1",
            "2001:db8::7",
            "a_b+c-d@x.example",
            "info@example.com",
            "web1"
        ]
    );
}

// ---- Switches ---------------------------------------------------------------

#[test]
fn monitor_mode_lets_over_limit_recipients_pass_logs_and_counts_them() {
    for on in ["1", "yes"] {
        let s = Sandbox::with_limits(":1\n");
        passes(s.user("a@example.com").env("OVERLIMIT_MONITOR", on));
        for _ in 0..2 {
            let o = s
                .user("a@example.com")
                .env("OVERLIMIT_MONITOR", on)
                .env("OVERLIMIT_REPLY", "421")
                .run();
            assert_eq!(o.code, Some(112), "{o:?}");
            let line = one_log_line(&o);
            assert!(line.contains("would refuse") && line.contains("a@example.com"));
            assert_eq!(o.fd4, "", "no reply line with 112");
        }
        assert_eq!(s.total("a@example.com"), Some(3));
    }
}

#[test]
fn monitor_set_to_zero_or_empty_is_off() {
    for off in ["0", ""] {
        let s = Sandbox::with_limits(":1\n");
        passes(s.user("a@example.com").env("OVERLIMIT_MONITOR", off));
        refused(s.user("a@example.com").env("OVERLIMIT_MONITOR", off));
        assert_eq!(s.total("a@example.com"), Some(1));
    }
}

#[test]
fn an_internal_error_fails_open_unless_failclosed_is_on() {
    let s = Sandbox::with_limits(":5\n");
    let plain = s.root.join("plain");
    std::fs::write(&plain, "not a directory").unwrap();
    let switches = [
        (None, 112),
        (Some("0"), 112),
        (Some(""), 112),
        (Some("1"), 111),
        (Some("yes"), 111),
    ];
    // The counter directory missing or a regular file; the control file a
    // directory (unreadable as text).
    let setups = [
        ("OVERLIMITDIR", s.root.join("missing")),
        ("OVERLIMITDIR", plain.clone()),
        ("RELAYLIMITS", s.dir()),
    ];
    for (name, path) in &setups {
        for (switch, code) in switches {
            let mut run = s.user("a@example.com").env(name, path);
            if let Some(v) = switch {
                run = run.env("OVERLIMIT_FAILCLOSED", v);
            }
            let o = run.run();
            assert_eq!(o.code, Some(code), "{name}={path:?} {switch:?}: {o:?}");
            let line = one_log_line(&o);
            assert!(line.contains(&path.display().to_string()), "{line}");
            assert_eq!(o.fd4, "");
        }
    }
    assert!(!exists(&s.root.join("missing")));
    assert_eq!(std::fs::read(&plain).unwrap(), b"not a directory");
    assert!(s.counter_files().is_empty());
}

#[test]
fn without_overlimitdir_the_counters_go_to_var_qmail_overlimit() {
    let default = Path::new("/var/qmail/overlimit");
    // Never touch a real installation; the default is observable only where
    // it is missing, as an error naming it.
    if exists(default) {
        return;
    }
    let s = Sandbox::with_limits(":5\n");
    let o = Run::new(PLUGIN)
        .env("RELAYLIMITS", s.control())
        .env("RELAYCLIENT", "")
        .env("TCPREMOTEIP", "192.0.2.1")
        .run();
    assert_eq!(o.code, Some(112), "{o:?}");
    assert!(one_log_line(&o).contains("/var/qmail/overlimit"), "{o:?}");
    assert!(!exists(default));
}

// ---- Locks ----------------------------------------------------------------

#[test]
fn a_held_lock_is_waited_for_about_a_second_then_is_an_internal_error() {
    let s = Sandbox::with_limits(":5\n");
    passes(s.user("a@example.com"));
    let held = File::open(s.dir().join("a@example.com")).unwrap();
    held.lock().unwrap();
    for (failclosed, code) in [("", 112), ("1", 111)] {
        let o = s
            .user("a@example.com")
            .env("OVERLIMIT_FAILCLOSED", failclosed)
            .run();
        assert_eq!(o.code, Some(code), "{o:?}");
        one_log_line(&o);
        // Waiting a little rides out ordinary contention; qmail-smtpd has no
        // timeout of its own, so the wait must end.
        assert!(
            o.elapsed >= Duration::from_millis(500) && o.elapsed <= Duration::from_secs(3),
            "{:?}",
            o.elapsed
        );
    }
    assert_eq!(s.total("a@example.com"), Some(1));
    drop(held);
    passes(s.user("a@example.com"));
    assert_eq!(s.total("a@example.com"), Some(2));
}

#[test]
fn a_counter_removed_while_the_plugin_waits_for_it_is_started_again() {
    let s = Sandbox::with_limits(":0\n");
    let path = s.dir().join("a@example.com");
    std::fs::write(&path, "XXXXX").unwrap();
    let held = File::open(&path).unwrap();
    held.lock().unwrap();
    let waiting = s.user("a@example.com").spawn();
    std::thread::sleep(Duration::from_millis(200));
    // What a sweep does: remove the counter while holding its lock.
    std::fs::remove_file(&path).unwrap();
    drop(held);
    let o = waiting.finish();
    assert_eq!((o.code, o.stderr.as_str()), (Some(112), ""), "{o:?}");
    // Counted on the new file at the path, not the removed one.
    assert_eq!(s.total("a@example.com"), Some(1));
}

// ---- Hostile input ----------------------------------------------------------

#[test]
fn the_plugin_never_reads_stdin() {
    // The harness keeps stdin an open pipe that never sends anything, like a
    // silent SMTP client: a plug-in reading it would block until killed.
    let s = Sandbox::with_limits(":1\n");
    let runs = [
        s.user("a@example.com"),
        s.user("a@example.com"),
        s.user("a@example.com")
            .env("OVERLIMITDIR", s.root.join("missing")),
        s.plugin().env("TCPREMOTEIP", "192.0.2.1"),
    ];
    for (run, code) in runs.into_iter().zip([112, 113, 112, 112]) {
        let o = run.run();
        assert_eq!(o.code, Some(code), "{o:?}");
        assert!(o.elapsed < Duration::from_secs(2), "{o:?}");
    }
}

/// xorshift64*: deterministic, so a failing input can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Bytes that are likely to mean something to a parser, mixed with noise.
    fn text(&mut self, max_pieces: u64) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"192.0.2.1",
            b"::ffff:",
            b"2001:db8::",
            b":",
            b"/",
            b"@",
            b"*@",
            b"#",
            b"\n",
            b"\r",
            b" ",
            b"\t",
            b",",
            b"0",
            b"1",
            b"5",
            b"99999999999999999999999",
            b"h",
            b"w",
            b"s",
            b"..",
            b"X",
            b"a@example.com",
            b"\\x",
            b"\xff",
        ];
        let mut out = Vec::new();
        for _ in 0..self.below(max_pieces + 1) {
            if self.chance(30) {
                out.push(self.next() as u8);
            } else {
                out.extend_from_slice(PIECES[self.below(PIECES.len() as u64) as usize]);
            }
        }
        out
    }

    /// An environment value: no NUL byte, which no environment can hold.
    fn value(&mut self, max_pieces: u64) -> OsString {
        let mut v = self.text(max_pieces);
        v.retain(|&b| b != 0);
        OsStr::from_bytes(&v).to_os_string()
    }
}

#[test]
fn hostile_environments_and_control_files_get_only_111_112_or_113() {
    const RUNS: usize = 300;
    const AT_ONCE: usize = 6;
    let mut rng = Rng(0x5eed_0f0e_7100);
    let sandboxes: Vec<Sandbox> = (0..AT_ONCE).map(|_| Sandbox::new()).collect();
    for batch in 0..RUNS / AT_ONCE {
        let mut cases = Vec::new();
        let mut running = Vec::new();
        for s in &sandboxes {
            let mut control = rng.text(40);
            // Often a default line, so that sandboxes reach their limits.
            if rng.chance(40) {
                control.extend_from_slice(format!("\n:{}\n", rng.below(4)).as_bytes());
            }
            std::fs::write(s.control(), &control).unwrap();
            let mut run = s.plugin();
            // Half the values come from a few plain names, so that clients
            // recur and reach their limits.
            let set = |run: Run, name: &str, percent, rng: &mut Rng| {
                if rng.chance(percent) {
                    const PLAIN: [&str; 4] =
                        ["a@example.com", "192.0.2.1", "::ffff:192.0.2.1", "1"];
                    let v = match rng.chance(50) {
                        true => OsString::from(PLAIN[rng.below(4) as usize]),
                        false => rng.value(8),
                    };
                    (run.env(name, &v), Some(v))
                } else {
                    (run, None)
                }
            };
            let relay;
            let monitor;
            let failclosed;
            (run, relay) = set(run, "RELAYCLIENT", 80, &mut rng);
            (run, _) = set(run, "SMTPAUTHUSER", 50, &mut rng);
            (run, _) = set(run, "SMTP_AUTH_USER", 20, &mut rng);
            (run, _) = set(run, "TCPREMOTEIP", 70, &mut rng);
            (run, _) = set(run, "TCP6REMOTEIP", 30, &mut rng);
            (run, _) = set(run, "RCPTHOSTS", 20, &mut rng);
            (run, monitor) = set(run, "OVERLIMIT_MONITOR", 20, &mut rng);
            (run, failclosed) = set(run, "OVERLIMIT_FAILCLOSED", 20, &mut rng);
            (run, _) = set(run, "RECIPIENT", 50, &mut rng);
            (run, _) = set(run, "SENDER", 50, &mut rng);
            if rng.chance(30) {
                let reply = ["421", "451", "550", "", "4211"][rng.below(5) as usize];
                run = run.env("OVERLIMIT_REPLY", reply);
            }
            // Now and then a control file that is no file of text.
            if rng.chance(10) {
                let odd = ["/dev/zero", "/dev/null", "/nonexistent/relaylimits"];
                run = run.env("RELAYLIMITS", odd[rng.below(3) as usize]);
            }
            let on = |v: &Option<OsString>| v.as_ref().is_some_and(|v| !v.is_empty() && v != "0");
            cases.push((control, relay.is_some(), on(&monitor), on(&failclosed)));
            running.push(run.spawn());
        }
        for ((o, (control, relay, monitor, failclosed)), s) in running
            .into_iter()
            .map(Running::finish)
            .zip(cases)
            .zip(&sandboxes)
        {
            let why = format!("batch {batch}, control {control:?}: {o:?}");
            assert_eq!(o.signal, None, "{why}");
            assert!(matches!(o.code, Some(111..=113)), "{why}");
            assert!(o.code != Some(111) || failclosed, "{why}");
            assert!(o.code != Some(113) || !monitor, "{why}");
            assert!(o.fd4.is_empty() || o.code == Some(113), "{why}");
            assert!(
                relay || (o.code == Some(112) && o.stderr.is_empty()),
                "{why}"
            );
            assert!(
                o.stderr
                    .lines()
                    .all(|l| l.starts_with("rcptcheck-overlimit: ")),
                "{why}"
            );
            let names: Vec<OsString> = entries(&s.root).into_iter().collect();
            assert_eq!(names, ["overlimit", "relaylimits"], "{why}");
        }
    }
}

#[test]
fn hostile_client_names_stay_inside_the_counter_directory_and_are_limited() {
    let s = Sandbox::with_limits(":2\n");
    let parent = s.root.parent().unwrap().to_path_buf();
    let parent_before = entries(&parent);
    let passwd = std::fs::read("/etc/passwd").ok();
    let long = "a".repeat(10 * 1024);
    let long_too = format!("{}b", &long[1..]);
    let names: Vec<(&str, &[u8])> = vec![
        ("SMTPAUTHUSER", b"../x"),
        ("SMTPAUTHUSER", b"../../x"),
        ("SMTPAUTHUSER", b"../../etc/passwd"),
        ("SMTPAUTHUSER", b"/"),
        ("SMTPAUTHUSER", b"/tmp/x"),
        ("SMTPAUTHUSER", b"."),
        ("SMTPAUTHUSER", b".."),
        ("SMTPAUTHUSER", b".hidden"),
        ("SMTPAUTHUSER", b"@example.com"),
        ("SMTPAUTHUSER", b"a b"),
        ("SMTPAUTHUSER", b"\xff\xfe/../x"),
        ("SMTPAUTHUSER", b"a\nrcptcheck-overlimit: forged line"),
        ("SMTPAUTHUSER", long.as_bytes()),
        ("SMTPAUTHUSER", long_too.as_bytes()),
        ("TCPREMOTEIP", b"../y"),
        ("TCPREMOTEIP", b"1.2.3.4/../../z"),
    ];
    for (var, name) in &names {
        let run = || {
            s.plugin()
                .env("RELAYCLIENT", "")
                .env(var, OsStr::from_bytes(name))
        };
        passes(run());
        passes(run());
        // One log line, however many newlines the name holds.
        refused(run());
    }
    assert_eq!(
        s.counter_files().len(),
        names.len(),
        "{:?}",
        s.counter_files()
    );
    let inside: Vec<OsString> = entries(&s.root).into_iter().collect();
    assert_eq!(inside, ["overlimit", "relaylimits"]);
    // Other tests' sandboxes come and go in the parent; nothing else may.
    for new in entries(&parent).difference(&parent_before) {
        assert!(
            new.to_string_lossy().starts_with("overlimit-test-"),
            "created outside: {new:?}"
        );
    }
    assert_eq!(std::fs::read("/etc/passwd").ok(), passwd);
}

#[test]
fn a_symlink_in_the_counter_directory_is_never_followed() {
    let s = Sandbox::with_limits(":5\n");
    let victim = s.root.join("victim");
    std::fs::write(&victim, "XXX").unwrap();
    std::os::unix::fs::symlink(&victim, s.dir().join("a@example.com")).unwrap();
    // A dangling link must not create its target either.
    let target = s.root.join("created");
    std::os::unix::fs::symlink(&target, s.dir().join("b@example.com")).unwrap();
    for user in ["a@example.com", "b@example.com"] {
        for (failclosed, code) in [("", 112), ("1", 111)] {
            let o = s.user(user).env("OVERLIMIT_FAILCLOSED", failclosed).run();
            assert_eq!(o.code, Some(code), "{o:?}");
            one_log_line(&o);
        }
        let link = std::fs::symlink_metadata(s.dir().join(user)).unwrap();
        assert!(link.file_type().is_symlink());
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"XXX");
    assert!(!exists(&target));
}

#[test]
fn a_hard_link_to_a_file_outside_is_never_written() {
    let s = Sandbox::with_limits(":5\n");
    let victim = s.root.join("victim");
    // Looks like a seed-script counter, so only the link count gives it away.
    std::fs::write(&victim, "XXX").unwrap();
    std::fs::hard_link(&victim, s.dir().join("a@example.com")).unwrap();
    for (failclosed, code) in [("", 112), ("1", 111)] {
        let o = s
            .user("a@example.com")
            .env("OVERLIMIT_FAILCLOSED", failclosed)
            .run();
        assert_eq!(o.code, Some(code), "{o:?}");
        one_log_line(&o);
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"XXX");
}

#[test]
fn a_fifo_or_a_directory_in_place_of_a_counter_or_control_file_does_not_hang() {
    let s = Sandbox::with_limits(":5\n");
    let mkfifo = |path: &Path| {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    mkfifo(&s.dir().join("a@example.com"));
    std::fs::create_dir(s.dir().join("b@example.com")).unwrap();
    let fifo_control = s.root.join("fifo-control");
    mkfifo(&fifo_control);
    let make = |case| match case {
        0 => s.user("a@example.com"),
        1 => s.user("b@example.com"),
        _ => s.user("c@example.com").env("RELAYLIMITS", &fifo_control),
    };
    for case in 0..3 {
        for (failclosed, code) in [("", 112), ("1", 111)] {
            let o = make(case).env("OVERLIMIT_FAILCLOSED", failclosed).run();
            assert_eq!(o.code, Some(code), "{o:?}");
            one_log_line(&o);
            assert!(o.elapsed < Duration::from_secs(2), "{o:?}");
        }
    }
    let kinds: Vec<bool> = ["a@example.com", "b@example.com"]
        .iter()
        .map(|f| {
            std::fs::symlink_metadata(s.dir().join(f))
                .unwrap()
                .is_file()
        })
        .collect();
    assert_eq!(kinds, [false, false], "left as they were");
}

// ---- Concurrency ------------------------------------------------------------

#[test]
fn many_plugins_at_once_let_exactly_the_limit_through() {
    for (client, file) in [
        (("SMTPAUTHUSER", "a@example.com"), "a@example.com"),
        (("TCPREMOTEIP", "192.0.2.1"), "192.0.2.1"),
    ] {
        let s = Sandbox::with_limits(":25\n");
        let out = parallel(60, |_| {
            s.plugin().env("RELAYCLIENT", "").env(client.0, client.1)
        });
        let slow: Vec<&Outcome> = out
            .iter()
            .filter(|o| o.code == Some(112) && !o.stderr.is_empty())
            .collect();
        assert!(slow.is_empty(), "internal errors: {slow:?}");
        assert_eq!((count(&out, 112), count(&out, 113)), (25, 35), "{file}");
        assert_eq!(s.total(file), Some(25));
    }
}

#[test]
fn a_plugin_killed_at_any_instant_loses_no_accepted_recipient() {
    let s = Sandbox::with_limits(":0\n");
    let mut rng = Rng(0xdead_beef_cafe);
    let (mut accepted, mut killed) = (0u64, 0u64);
    for _ in 0..40 {
        // Every other process is killed a random moment after it starts,
        // from before its first instruction to after its exit, while the
        // others may hold the lock.
        let mut running = Vec::new();
        for i in 0..4 {
            let mut r = s.user("a@example.com").spawn();
            if i % 2 == 1 {
                std::thread::sleep(Duration::from_micros(rng.below(400)));
                let _ = r.child.kill();
            }
            running.push(r);
        }
        for o in running.into_iter().map(Running::finish) {
            match o.code {
                Some(112) => accepted += 1,
                None => killed += 1,
                _ => panic!("{o:?}"),
            }
        }
        // The counter reads after every round (`status` refuses a damaged one).
        let status = s.admin(&["status", "a@example.com"]).run();
        assert_eq!(status.code, Some(0), "{status:?}");
    }
    let t = s.total("a@example.com").unwrap();
    assert!(
        accepted <= t && t <= accepted + killed,
        "count {t}, accepted {accepted}, killed {killed}"
    );
}

#[test]
fn version_and_help_answer_on_stdout_and_count_nothing() {
    let s = Sandbox::with_limits(":1\n");
    for (arg, start) in [
        ("--version", "rcptcheck-overlimit "),
        ("-V", "rcptcheck-overlimit "),
        ("--help", "usage: rcptcheck-overlimit"),
        ("-h", "usage: rcptcheck-overlimit"),
    ] {
        // As an administrator runs it: stdout apart from stderr.
        let o = std::process::Command::new(PLUGIN)
            .arg(arg)
            .env_clear()
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{arg}: {o:?}");
        assert!(
            stdout.starts_with(start) && o.stderr.is_empty(),
            "{arg}: {o:?}"
        );
        // In a relay client's environment it still counts nothing.
        let o = s.user("a@example.com").arg(arg).run();
        assert_eq!(o.code, Some(0), "{arg}: {o:?}");
        assert!(o.stderr.starts_with(start), "{arg}: {o:?}");
    }
    assert!(s.counter_files().is_empty(), "{:?}", s.counter_files());
    // With no argument it counts as before: the limit of 1 holds.
    assert_eq!(s.user("a@example.com").code(), 112);
    assert_eq!(s.user("a@example.com").code(), 113);
}

#[test]
fn an_unknown_argument_is_named_counts_nothing_and_answers_111() {
    let s = Sandbox::with_limits(":5\n");
    let cases: [(&[&[u8]], &str); 4] = [
        (&[b"--jsn"], "unknown argument --jsn "),
        (&[b"a@example.com"], "unknown argument a@example.com "),
        (&[b"\xff"], "unknown argument \\xff "),
        (&[b"--version", b"--help"], "one option at a time "),
    ];
    for (args, said) in cases {
        let mut run = s.user("a@example.com");
        for a in args {
            run = run.arg(OsStr::from_bytes(a));
        }
        let o = run.run();
        // 111: qmail-smtpd's "unable to verify", so a wrapper that passes
        // an argument by mistake fails closed instead of passing uncounted.
        assert_eq!(o.code, Some(111), "{args:?}: {o:?}");
        assert_eq!(
            one_log_line(&o),
            format!(
                "rcptcheck-overlimit: {said}(qmail-smtpd runs it with none; try --help); \
                 nothing counted, answering 111"
            ),
            "{args:?}"
        );
    }
    assert!(s.counter_files().is_empty(), "{:?}", s.counter_files());
}

//! Pins the spec's rolling windows (`N/PERIOD`, several on a line) and what
//! happens around a refusal (issue 3): refused attempts tallied apart without
//! extending the block, the optional reply line on fd 4, and the
//! administrator's notification. Periods are seconds long so the tests can
//! watch windows fill and free; the slow tests run in parallel threads.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const A: &str = "a@example.com";

/// One plug-in run and the instants around it: the decision fell between.
struct Timed {
    start: Instant,
    end: Instant,
    out: Outcome,
}

fn timed(run: Run) -> Timed {
    let start = Instant::now();
    let out = run.run();
    Timed {
        start,
        end: Instant::now(),
        out,
    }
}

/// Asserts a quiet pass: 112, nothing logged, nothing on fd 4.
fn passes(o: &Outcome) {
    assert_eq!(
        (o.code, o.stderr.as_str(), o.fd4.as_str()),
        (Some(112), "", ""),
        "{o:?}"
    );
}

/// Asserts a refusal and returns its log line.
fn refused(o: &Outcome) -> &str {
    assert_eq!(o.code, Some(113), "{o:?}");
    let line = o.stderr.lines().next().unwrap_or_default();
    assert!(line.starts_with("rcptcheck-overlimit: refused "), "{o:?}");
    line
}

/// Tries once every 50 ms until a recipient passes, failing if none has by
/// `limit` after `since`; returns the passing run and the refusals before it.
fn until_accepted(make: impl Fn() -> Run, since: Instant, limit: Duration) -> (Timed, u64) {
    let mut refusals = 0;
    loop {
        let t = timed(make());
        match t.out.code {
            Some(112) => return (t, refusals),
            Some(113) => refusals += 1,
            _ => panic!("{:?}", t.out),
        }
        assert!(
            t.start.duration_since(since) <= limit,
            "still refused {:?} after the first recipient",
            t.start.duration_since(since)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---- Rolling windows ----------------------------------------------------------

/// The most a window keeps a recipient past its PERIOD: one bucket of
/// PERIOD/60 rounded up to a millisecond, and a millisecond of clock.
fn slack(period: Duration) -> Duration {
    Duration::from_millis((period.as_millis() as u64).div_ceil(60) + 1)
}

#[test]
fn three_per_two_seconds_has_room_again_two_seconds_after_not_four() {
    const PERIOD: Duration = Duration::from_secs(2);
    let s = Sandbox::with_limits(&format!("{A}:3/2s\n:1000\n"));
    let first = timed(s.user(A));
    passes(&first.out);
    passes(&s.user(A).run());
    passes(&s.user(A).run());
    let o = s.user(A).run();
    let line = refused(&o);
    assert!(line.contains("limit 3/2s reached (3 counted"), "{line}");

    // The first recipient was counted before `first.end`: no refusal may
    // start later than a period and the slack after that. (The bug: whole
    // second buckets kept it up to 4 s.)
    let (again, _) = until_accepted(|| s.user(A), first.end, PERIOD + slack(PERIOD));
    // Never loose: the first recipient counted for a whole PERIOD.
    assert!(
        again.end.duration_since(first.start) >= PERIOD,
        "room after only {:?}",
        again.end.duration_since(first.start)
    );
}

#[test]
fn ten_per_one_second_means_ten_per_second_not_ten_per_three() {
    const PERIOD: Duration = Duration::from_secs(1);
    let s = Sandbox::with_limits(&format!("{A}:10/1s\n"));
    let began = Instant::now();
    let burst = parallel(10, |_| s.user(A));
    let ended = Instant::now();
    assert_eq!(count(&burst, 112), 10, "{burst:?}");
    let eleventh = timed(s.user(A));
    if eleventh.start.duration_since(began) < PERIOD {
        refused(&eleventh.out);
    } else {
        eprintln!(
            "the burst took {:?}: too slow to see the refusal",
            ended - began
        );
    }
    until_accepted(|| s.user(A), ended, PERIOD + slack(PERIOD));
}

/// A counter file in the previous release's format (version 1, which the
/// old and the new code both read), with the given window line.
fn version_1_counter(s: &Sandbox, client: &str, window: &str) {
    let body =
        format!("overlimit 1\nclient {client}\ntotal 1\nrefused 0 0\nnotified 0\n{window}\n");
    let sum = body.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    std::fs::write(s.dir().join(client), format!("{body}end {sum:08x}\n")).unwrap();
}

#[test]
fn one_recipient_counted_ten_years_ahead_by_a_clock_stepped_back_locks_no_one_out() {
    const PERIOD: Duration = Duration::from_secs(2);
    let s = Sandbox::with_limits(&format!("{A}:1/2s\n"));
    // Buckets of one second: the recipient sits ten years from now.
    let ahead = unix_now() + 10 * 365 * 86_400;
    version_1_counter(&s, A, &format!("window 2 {ahead} 0 1"));
    let first = timed(s.user(A));
    let line = refused(&first.out);
    // Rounded up: a period and a bucket from now is at most 3 s.
    assert!(
        ["room in 1s", "room in 2s", "room in 3s"]
            .iter()
            .any(|r| line.contains(r)),
        "{line}"
    );
    // From now on it counts as of now, for one period.
    until_accepted(|| s.user(A), first.end, PERIOD + slack(PERIOD));
}

#[test]
fn a_hostile_bucket_index_in_a_counter_file_overflows_nothing() {
    let s = Sandbox::with_limits(&format!("{A}:1/2s\n"));
    version_1_counter(&s, A, &format!("window 2 {} 0 1", u64::MAX));
    // The bug: (first + i + span + 1) * width overflowed (a panic, logged as
    // an internal error, and the recipient passed).
    let o = s.user(A).run();
    let line = refused(&o);
    assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
    assert!(!line.contains("internal error"), "{line}");
}

#[test]
fn no_sliding_period_ever_holds_more_than_n_acceptances() {
    const N: usize = 3;
    const PERIOD: Duration = Duration::from_secs(2);
    let s = Sandbox::with_limits(&format!("{A}:3/2s\n"));
    let began = Instant::now();
    let mut accepted: Vec<(Instant, Instant)> = Vec::new();
    let mut refusals = 0;
    // A steady sender for five seconds: the window fills, frees and fills again.
    while began.elapsed() < Duration::from_secs(5) {
        let t = timed(s.user(A));
        match t.out.code {
            Some(112) => accepted.push((t.start, t.end)),
            Some(113) => refusals += 1,
            _ => panic!("{:?}", t.out),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // N+1 acceptances within one PERIOD would break the limit. Each decision
    // lies between its run's start and end, so the latest the (i+N)th can
    // have been, less the earliest the ith can have been, must reach PERIOD.
    for w in accepted.windows(N + 1) {
        let span = w[N].1.duration_since(w[0].0);
        assert!(
            span >= PERIOD,
            "{} acceptances within {span:?} (period {PERIOD:?})",
            N + 1
        );
    }
    // Strict, but not starved: the window freed within PERIOD + 2 s at least once.
    assert!(
        accepted.len() >= 2 * N,
        "only {} accepted in 5 s",
        accepted.len()
    );
    assert!(refusals > 0);
}

#[test]
fn every_window_on_a_line_must_hold() {
    let s = Sandbox::with_limits(&format!("{A}:2/2s,3/1h\nb@example.com:3/2s,2/1h\n:1000\n"));
    // The short window binds first while the long one has room...
    let first = timed(s.user(A));
    passes(&first.out);
    passes(&s.user(A).run());
    let o = s.user(A).run();
    let line = refused(&o);
    assert!(line.contains("limit 2/2s reached (2 counted"), "{line}");
    assert!(!line.contains("3/1h"), "{line}");
    // ...frees within its period plus two buckets...
    until_accepted(|| s.user(A), first.start, Duration::from_secs(4));
    // ...and then the long one holds.
    let o = s.user(A).run();
    let line = refused(&o);
    assert!(line.contains("limit 3/1h reached (3 counted"), "{line}");
    let json = s.status_json(A);
    assert!(json.contains("{\"period\":3600,\"count\":3}"), "{json}");

    // The long window binds although the short one has room.
    for _ in 0..2 {
        passes(&s.user("b@example.com").run());
    }
    let o = s.user("b@example.com").run();
    let line = refused(&o);
    assert!(line.contains("limit 2/1h reached (2 counted"), "{line}");
    assert!(!line.contains("3/2s"), "{line}");
}

#[test]
fn an_item_of_zero_imposes_no_limit() {
    let s = Sandbox::with_limits(&format!("{A}:0/1s,2\nb@example.com:0/1h\n:1\n"));
    passes(&s.user(A).run());
    passes(&s.user(A).run());
    let o = s.user(A).run();
    assert!(refused(&o).contains("limit 2 reached"), "{o:?}");
    for _ in 0..10 {
        passes(&s.user("b@example.com").run());
    }
}

// ---- Refused attempts -----------------------------------------------------------

#[test]
fn refused_attempts_are_tallied_apart_and_never_extend_the_block() {
    const CLIENT: &str = "192.0.2.7";
    let s = Sandbox::with_limits(":1/2s\n");
    let first = timed(s.ip(CLIENT));
    passes(&first.out);
    // A hijacked account hammering the server: a burst of refusals...
    let burst = parallel(25, |_| s.ip(CLIENT));
    assert_eq!(count(&burst, 113), 25, "{burst:?}");
    // ...and one attempt every 50 ms after it; room still frees as if none
    // had been made.
    let (_, more) = until_accepted(|| s.ip(CLIENT), first.start, Duration::from_secs(4));
    let json = s.status_json(CLIENT);
    assert_eq!(json_number(&json, "refused"), 25 + more, "{json}");
    // Only accepted recipients are counted, in the window and in the total.
    assert_eq!(json_number(&json, "count"), 2, "{json}");
    assert!(json.contains("{\"period\":2,\"count\":1}"), "{json}");
}

// ---- The reply line on fd 4 -------------------------------------------------------

#[test]
fn the_reply_line_names_the_limit_and_when_room_frees() {
    for code in ["451", "421"] {
        let s = Sandbox::with_limits(&format!("{A}:2/1h\n:1\n"));
        let run = |user: &str| s.user(user).env("OVERLIMIT_REPLY", code);
        // Never with a pass.
        passes(&run(A).run());
        passes(&run(A).run());
        let o = run(A).run();
        refused(&o);
        let text = o.fd4.trim_end_matches(['\r', '\n']);
        assert!(text.starts_with(&format!("{code} ")), "{o:?}");
        assert!(!text.contains(['\r', '\n']), "one line: {text:?}");
        assert!(o.fd4.len() < 1021, "qmail-smtpd reads 1,021 bytes");
        for part in [" 2 ", "1h", "try again in 1h"] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }

        // A classic count has no time to promise.
        passes(&run("c@example.com").run());
        let o = run("c@example.com").run();
        refused(&o);
        assert!(o.fd4.starts_with(&format!("{code} ")), "{o:?}");
        assert!(
            o.fd4.contains(" 1 ") && !o.fd4.contains("try again in"),
            "{o:?}"
        );
    }
}

#[test]
fn no_reply_line_without_a_refusal_overlimit_reply_421_or_451_and_use_fd4() {
    let s = Sandbox::with_limits(":1\n");
    passes(&s.user(A).env("OVERLIMIT_REPLY", "451").run());
    for reply in [
        None,
        Some(""),
        Some("550"),
        Some("4511"),
        Some("451 "),
        Some("0"),
    ] {
        let mut run = s.user(A);
        if let Some(r) = reply {
            run = run.env("OVERLIMIT_REPLY", r);
        }
        let o = run.run();
        refused(&o);
        assert_eq!(o.fd4, "", "OVERLIMIT_REPLY={reply:?}");
    }
    // qmail-smtpd without the fd 4 convention: nothing written there.
    let o = s
        .user(A)
        .env("OVERLIMIT_REPLY", "451")
        .env_remove("USE_FD4")
        .run();
    refused(&o);
    assert_eq!(o.fd4, "");
    // Monitor mode refuses nothing, so it replies nothing.
    let o = s
        .user(A)
        .env("OVERLIMIT_REPLY", "421")
        .env("OVERLIMIT_MONITOR", "1")
        .run();
    assert_eq!((o.code, o.fd4.as_str()), (Some(112), ""), "{o:?}");
}

// ---- Notifying the administrator ----------------------------------------------------

/// Writes an executable shell script into the sandbox. A child shell writes
/// it, not this process: another test thread forking while this process held
/// the file open for writing would leave a copy of that descriptor in its
/// child for a moment, and running the script then could fail with "Text file
/// busy".
fn script(s: &Sandbox, name: &str, body: &str) -> PathBuf {
    let path = s.root.join(name);
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\""])
        .arg("sh")
        .arg(format!("#!/bin/sh\n{body}\n"))
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// A notifier that appends its arguments, one call a line, to `notified`.
fn recorder(s: &Sandbox) -> (PathBuf, PathBuf) {
    let log = s.root.join("notified");
    let program = script(s, "notify", &format!("echo \"$@\" >> '{}'", log.display()));
    (program, log)
}

/// The lines of `log` once it holds `n` (the notifier runs in the
/// background), after a pause long enough for a stray extra one to land.
fn notifications(log: &Path, n: usize) -> Vec<String> {
    let read = || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let began = Instant::now();
    while read().len() < n && began.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    read()
}

#[test]
fn one_notification_per_window_going_over_however_many_refusals_and_again_after_it_frees() {
    let s = Sandbox::with_limits(&format!("{A}:2/2s\n"));
    let (program, log) = recorder(&s);
    let run = || s.user(A).env("OVERLIMIT_NOTIFY", &program);
    let first = timed(run());
    passes(&first.out);
    passes(&run().run());
    let before = unix_now();
    let burst = parallel(10, |_| run());
    assert_eq!(count(&burst, 113), 10, "{burst:?}");
    let lines = notifications(&log, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let args: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(args[..3], [A, "2/2s", "2"], "{lines:?}");
    let room: u64 = args[3].parse().expect("room-at in Unix seconds");
    assert!(
        (before..=before + 5).contains(&room),
        "room at {room}, now {before}"
    );

    // The window frees (the refusals meanwhile notify no one), fills again,
    // and goes over again: a second notification.
    until_accepted(run, first.start, Duration::from_secs(4));
    while run().run().code == Some(112) {}
    for _ in 0..4 {
        refused(&run().run());
    }
    let lines = notifications(&log, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].starts_with(&format!("{A} 2/2s 2 ")), "{lines:?}");
}

#[test]
fn two_limits_of_one_period_each_notify_once_not_on_every_refusal() {
    // The bug: one flag per period, set by the full 1/1h and cleared by the
    // 10/1h that still had room, so every refusal notified.
    let s = Sandbox::with_limits(&format!("{A}:1/1h,10/1h\n"));
    let (program, log) = recorder(&s);
    let run = || s.user(A).env("OVERLIMIT_NOTIFY", &program);
    passes(&run().run());
    for _ in 0..4 {
        refused(&run().run());
    }
    let lines = notifications(&log, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with(&format!("{A} 1/1h 1 ")), "{lines:?}");
}

#[test]
fn classic_and_domain_limits_notify_once_with_reset_for_room() {
    let s = Sandbox::with_limits(":2\n@example.org:3\n*@example.org:0\n");
    let (program, log) = recorder(&s);
    let run = |user: &str| s.user(user).env("OVERLIMIT_NOTIFY", &program);
    passes(&run(A).run());
    passes(&run(A).run());
    for _ in 0..5 {
        refused(&run(A).run());
    }
    passes(&run("u1@example.org").run());
    passes(&run("u1@example.org").run());
    passes(&run("u2@example.org").run());
    for user in ["u2@example.org", "u3@example.org", "u3@example.org"] {
        refused(&run(user).run());
    }
    let mut lines = notifications(&log, 2);
    lines.sort();
    assert_eq!(
        lines,
        ["@example.org 3 3 reset", &format!("{A} 2 2 reset")],
        "client, limit, count, room"
    );
}

#[test]
fn a_slow_notifier_delays_neither_the_exit_nor_the_end_of_fd4() {
    let s = Sandbox::with_limits(":1\n");
    let started = s.root.join("started");
    // It lets go of stdout and stderr (the harness waits for their end, as
    // multilog never does) but not of the descriptors it did not open: had
    // it inherited fd 4, the harness's read to end of file would wait 5 s.
    let program = script(
        &s,
        "slow",
        &format!(
            "exec >/dev/null 2>&1\necho \"$@\" >> '{}'\nsleep 5",
            started.display()
        ),
    );
    let run = || {
        s.ip("192.0.2.1")
            .env("OVERLIMIT_NOTIFY", &program)
            .env("OVERLIMIT_REPLY", "451")
    };
    passes(&run().run());
    let began = Instant::now();
    let o = run().run();
    let elapsed = began.elapsed();
    refused(&o);
    assert!(o.fd4.starts_with("451 "), "{o:?}");
    assert!(
        elapsed < Duration::from_secs(1),
        "the refusal took {elapsed:?}"
    );
    // The notifier did run.
    assert_eq!(notifications(&started, 1), ["192.0.2.1 1 1 reset"]);
}

#[test]
fn a_notifier_that_cannot_start_is_logged_and_the_refusal_stands() {
    let s = Sandbox::with_limits(":1\n");
    let missing = s.root.join("no-such-program");
    passes(&s.user(A).env("OVERLIMIT_NOTIFY", &missing).run());
    let o = s.user(A).env("OVERLIMIT_NOTIFY", &missing).run();
    refused(&o);
    assert!(
        o.stderr
            .lines()
            .any(|l| l.starts_with("rcptcheck-overlimit: ") && l.contains("OVERLIMIT_NOTIFY")),
        "{o:?}"
    );
}

// ---- Many recipients at once ------------------------------------------------------

#[test]
fn a_count_of_a_trillion_is_added_in_one_step_not_one_at_a_time_under_the_lock() {
    let s = Sandbox::with_limits(":2000000000000/1h\n");
    // The engine itself, as the local path's counter calls it for one
    // message of many recipients (that program now runs only installed).
    let client = overlimit::client::Client::from_name(A.as_bytes()).unwrap();
    let mut notes = Vec::new();
    let resolved = overlimit::lookup::resolve(&s.control(), &client, &mut notes).unwrap();
    let targets = overlimit::admit::targets(&client, &resolved);
    let started = Instant::now();
    // The bug: a loop of n additions per window, holding the lock (and,
    // here, the test) for hours.
    let result = overlimit::admit::admit_n(
        &mut overlimit::backend::Store::Files(s.dir()),
        &targets,
        overlimit::time::Time::now(),
        started + Duration::from_secs(5),
        false,
        1_000_000_000_000,
    )
    .unwrap();
    let took = started.elapsed();
    assert!(result.accepted(), "{:?}", result.full);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let json = s.status_json(A);
    assert_eq!(json_number(&json, "count"), 1_000_000_000_000, "{json}");
    assert!(
        json.contains("{\"period\":3600,\"count\":1000000000000}"),
        "{json}"
    );
}

#[test]
fn the_notifier_does_not_inherit_the_plugins_ignored_limit_signals() {
    // The plug-in ignores SIGXFSZ, SIGXCPU and SIGPIPE for itself; ignored
    // dispositions survive exec, and an administrator's program should meet
    // its limits as it would anywhere else.
    let s = Sandbox::with_limits(":1\n");
    let log = s.root.join("ignored");
    let program = script(
        &s,
        "notify",
        &format!("grep SigIgn /proc/$$/status >> '{}'", log.display()),
    );
    passes(&s.user(A).env("OVERLIMIT_NOTIFY", &program).run());
    refused(&s.user(A).env("OVERLIMIT_NOTIFY", &program).run());
    let lines = notifications(&log, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let mask = u64::from_str_radix(lines[0].split_whitespace().nth(1).unwrap(), 16).unwrap();
    for (name, sig) in [
        ("SIGPIPE", libc::SIGPIPE),
        ("SIGXCPU", libc::SIGXCPU),
        ("SIGXFSZ", libc::SIGXFSZ),
    ] {
        assert_eq!(mask & (1 << (sig - 1)), 0, "{name} ignored: {lines:?}");
    }
}

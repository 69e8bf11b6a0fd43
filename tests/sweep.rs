//! Pins the spec's section "The sweep" and the sweep's exit codes and logs by
//! running `overlimit-sweep` against counters the real plug-in wrote,
//! including while plug-ins are counting.

mod common;
use common::*;
use std::fs::File;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The number after `"KEY":` in `overlimit status --json CLIENT`; for
/// `windows` the count of the first window.
fn status_number(s: &Sandbox, client: &str, key: &str) -> u64 {
    let json = s.status_json(client);
    match key {
        "windows" => json_number(
            json.split("\"windows\":[").nth(1).unwrap_or_default(),
            "count",
        ),
        _ => json_number(&json, key),
    }
}

/// Sends one recipient for user `user`; returns the plug-in's exit code.
fn send(s: &Sandbox, user: &str) -> i32 {
    s.user(user).code()
}

/// Runs the sweep, which must succeed quietly on stderr; returns stdout.
fn sweep(s: &Sandbox, args: &[&str]) -> String {
    let o = s.sweep(args).run();
    assert_eq!((o.code, o.stderr.as_str()), (Some(0), ""), "{o:?}");
    o.stdout
}

#[test]
fn the_sweep_resets_classic_counts_so_clients_can_send_their_limit_again() {
    let s = Sandbox::with_limits(":2\n");
    let codes: Vec<i32> = (0..3).map(|_| send(&s, "a@example.com")).collect();
    assert_eq!(codes, [112, 112, 113]);
    assert_eq!(s.ip("192.0.2.1").code(), 112);
    assert_eq!(sweep(&s, &[]), "");
    // Nothing is left in them, so the counters are gone.
    assert!(s.counter_files().is_empty(), "{:?}", s.counter_files());
    let codes: Vec<i32> = (0..3).map(|_| send(&s, "a@example.com")).collect();
    assert_eq!(codes, [112, 112, 113]);
}

#[test]
fn the_sweep_resets_the_seed_scripts_x_files() {
    let s = Sandbox::with_limits(":2\n");
    std::fs::write(s.dir().join("a@example.com"), "XXXXX").unwrap();
    assert_eq!(send(&s, "a@example.com"), 113);
    assert_eq!(sweep(&s, &[]), "");
    assert_eq!(s.total("a@example.com"), None);
    assert_eq!(send(&s, "a@example.com"), 112);
}

#[test]
fn keep_overlimit_keeps_clients_at_or_over_their_classic_limit_and_resets_the_rest() {
    let s = Sandbox::with_limits("over@example.com:2\nfree@example.com:0\n:3\n");
    for _ in 0..3 {
        assert_eq!(send(&s, "at@example.com"), 112);
    }
    std::fs::write(s.dir().join("over@example.com"), "XXXXX").unwrap();
    assert_eq!(send(&s, "under@example.com"), 112);
    for _ in 0..4 {
        assert_eq!(send(&s, "free@example.com"), 112);
    }
    let out = sweep(&s, &["--keep-overlimit"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "one line per kept client: {out:?}");
    assert!(lines.iter().any(|l| l.contains("at@example.com")), "{out}");
    assert!(
        lines.iter().any(|l| l.contains("over@example.com")),
        "{out}"
    );
    // The kept ones keep their counts and stay refused...
    assert_eq!(s.total("at@example.com"), Some(3));
    assert_eq!(s.total("over@example.com"), Some(5));
    assert_eq!(send(&s, "at@example.com"), 113);
    assert_eq!(send(&s, "over@example.com"), 113);
    // ...the others start again, the unlimited one included.
    assert_eq!(s.total("under@example.com"), None);
    assert_eq!(s.total("free@example.com"), None);
    let codes: Vec<i32> = (0..4).map(|_| send(&s, "under@example.com")).collect();
    assert_eq!(codes, [112, 112, 112, 113]);
    // A plain sweep ends the ban.
    assert_eq!(sweep(&s, &[]), "");
    assert_eq!(send(&s, "at@example.com"), 112);
    assert_eq!(send(&s, "over@example.com"), 112);
}

#[test]
fn keep_overlimit_names_a_kept_client_by_its_name_not_its_file() {
    // Names outside the ordinary set are stored under an encoded file name;
    // the administrator needs the client's name to `overlimit reset` it.
    let s = Sandbox::with_limits(":1\n");
    assert_eq!(send(&s, "John Doe"), 112);
    let out = sweep(&s, &["--keep-overlimit"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("john doe"), "{out}");
    assert_eq!(send(&s, "John Doe"), 113);
}

#[test]
fn the_sweep_keeps_window_counts_and_only_resets_the_classic_count() {
    let s = Sandbox::with_limits("w@example.com:100/1h,50\n:5\n");
    for _ in 0..3 {
        assert_eq!(send(&s, "w@example.com"), 112);
        assert_eq!(send(&s, "c@example.com"), 112);
    }
    assert_eq!(sweep(&s, &[]), "");
    // c had only a classic count: nothing left, removed.
    assert_eq!(s.counter_files(), ["w@example.com"]);
    assert_eq!(status_number(&s, "w@example.com", "count"), 0);
    assert_eq!(status_number(&s, "w@example.com", "windows"), 3);
}

#[test]
fn the_sweep_removes_a_counter_whose_windows_have_expired() {
    let s = Sandbox::with_limits("w@example.com:100/1s\n");
    assert_eq!(send(&s, "w@example.com"), 112);
    // A one-second window forgets within two seconds (it errs strict by a
    // bucket on each side).
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(sweep(&s, &[]), "");
    assert!(s.counter_files().is_empty(), "{:?}", s.counter_files());
}

#[test]
fn the_sweep_locks_each_counter_before_changing_it() {
    let s = Sandbox::with_limits(":5\n");
    assert_eq!(send(&s, "a@example.com"), 112);
    let path = s.dir().join("a@example.com");
    let held = File::open(&path).unwrap();
    held.lock().unwrap();
    let mut running = s.sweep(&[]).spawn();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "the sweep went on without the lock"
    );
    assert_eq!(s.total("a@example.com"), Some(1));
    drop(held);
    let o = running.finish();
    assert_eq!((o.code, o.stderr.as_str()), (Some(0), ""), "{o:?}");
    assert!(!exists(&path));
}

#[test]
fn a_sweep_racing_with_the_plugin_loses_no_increment() {
    // The sweep resets the classic count but never a window count, so the
    // window's count at the end must equal the recipients accepted, however
    // the sweeps fell between the increments.
    let s = Sandbox::with_limits("racer:1000000/1h\n");
    let done = AtomicBool::new(false);
    let (outcomes, sweeps) = std::thread::scope(|scope| {
        let sweeper = scope.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                assert_eq!(sweep(&s, &[]), "");
                n += 1;
            }
            n
        });
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            outcomes.extend(parallel(10, |_| s.user("racer")));
        }
        done.store(true, Ordering::SeqCst);
        (outcomes, sweeper.join().unwrap())
    });
    let slow: Vec<&Outcome> = outcomes.iter().filter(|o| !o.stderr.is_empty()).collect();
    assert!(slow.is_empty(), "internal errors: {slow:?}");
    assert_eq!(count(&outcomes, 112), 200);
    assert_eq!(status_number(&s, "racer", "windows"), 200);
    assert!(sweeps >= 10, "only {sweeps} sweeps ran");
    // The sweeps did reset the classic count meanwhile.
    assert!(status_number(&s, "racer", "count") < 200);
}

#[test]
fn the_sweep_never_follows_a_symlink_or_touches_what_is_not_a_counter_file() {
    let s = Sandbox::with_limits(":5\n");
    assert_eq!(send(&s, "a@example.com"), 112);
    let victim = s.root.join("victim");
    std::fs::write(&victim, "XXX").unwrap();
    std::os::unix::fs::symlink(&victim, s.dir().join("link@example.com")).unwrap();
    std::fs::write(s.dir().join("junk"), "not a counter\n").unwrap();
    let fifo = std::ffi::CString::new(s.dir().join("fifo").into_os_string().into_vec()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let o = s.sweep(&[]).run();
    // It could not do its job on three entries: cron mails the errors.
    assert_eq!(o.code, Some(2), "{o:?}");
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{o:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("overlimit-sweep: ")),
        "{o:?}"
    );
    for name in ["link@example.com", "junk", "fifo"] {
        assert!(o.stderr.contains(name), "{name}: {o:?}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"XXX");
    assert!(std::fs::symlink_metadata(s.dir().join("link@example.com"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(s.counter("junk").unwrap(), b"not a counter\n");
    // The real counter was still swept.
    assert_eq!(s.total("a@example.com"), None);
}

#[test]
fn the_sweep_of_an_empty_directory_succeeds_quietly() {
    let s = Sandbox::with_limits(":5\n");
    let o = s.sweep(&[]).run();
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (Some(0), "", "")
    );
}

#[test]
fn a_missing_counter_directory_is_an_error_with_exit_code_2() {
    let s = Sandbox::with_limits(":5\n");
    let missing = s.root.join("missing");
    let o = s.sweep(&[]).env("OVERLIMITDIR", &missing).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.starts_with("overlimit-sweep: "), "{o:?}");
    assert!(o.stderr.contains(&missing.display().to_string()), "{o:?}");
    assert!(!exists(&missing));
}

#[test]
fn a_usage_error_exits_2_with_the_usage_on_stderr() {
    let s = Sandbox::with_limits(":5\n");
    assert_eq!(send(&s, "a@example.com"), 112);
    for args in [
        &["--bogus"][..],
        &["--keep-overlimit", "extra"],
        &["keep-overlimit"],
    ] {
        let o = s.sweep(args).run();
        assert_eq!(o.code, Some(2), "{args:?}: {o:?}");
        assert!(o.stderr.contains("usage: overlimit-sweep"), "{o:?}");
        assert_eq!(o.stdout, "");
    }
    // Nothing was swept.
    assert_eq!(s.total("a@example.com"), Some(1));
    let o = s.sweep(&["--help"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("usage: overlimit-sweep"), "{o:?}");
}

#[test]
fn keep_overlimit_names_a_range_aggregate_as_status_prints_it() {
    let s = Sandbox::with_limits("@192.0.2.0/24:2\n:100\n");
    assert_eq!(s.ip("192.0.2.1").code(), 112);
    assert_eq!(s.ip("192.0.2.2").code(), 112);
    assert_eq!(s.ip("192.0.2.3").code(), 113);
    let out = sweep(&s, &["--keep-overlimit"]);
    assert_eq!(out, "kept @192.0.2.0/24: 2 counted, limit 2\n");
    assert_eq!(s.ip("192.0.2.4").code(), 113, "still a ban");
    let o = s.admin(&["reset", "@192.0.2.0/24"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(s.ip("192.0.2.4").code(), 112);
}

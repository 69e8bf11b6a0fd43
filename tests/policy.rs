//! overlimit-policy as Postfix's smtpd meets it: the protocol in spawn mode
//! (stdin/stdout) and as a daemon on unix and inet sockets, the actions, the
//! monitor and fail-closed switches, internal errors answered in time,
//! malformed requests that close only their own connection, the clean stop
//! on SIGTERM, and one limit shared with rcptcheck-overlimit.

mod common;
#[path = "support/policy.rs"]
mod policy;
#[path = "support/process.rs"]
mod process;

use common::Sandbox;
use policy::{actions, command, rcpt, request, spawn_mode, Daemon, Peer};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The sandbox's control file and counters, and `extra`.
fn env(s: &Sandbox, extra: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    let mut v = vec![
        ("RELAYLIMITS".into(), s.control().into_os_string()),
        ("OVERLIMITDIR".into(), s.dir().into_os_string()),
    ];
    v.extend(extra.iter().map(|(k, val)| ((*k).into(), (*val).into())));
    v
}

#[test]
fn spawn_mode_counts_rcpt_requests_and_defers_over_the_limit() {
    let s = Sandbox::with_limits("alice@example.com:2/1h\n");
    let mut input = request("CONNECT", "", "192.0.2.10", "");
    input += &request("MAIL", "Alice@Example.com", "192.0.2.10", "");
    input += &rcpt("Alice@Example.com").repeat(3);
    input += &request("DATA", "Alice@Example.com", "192.0.2.10", "");
    let f = spawn_mode(&env(&s, &[]), input.as_bytes());
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let a = actions(&f.stdout);
    assert_eq!(a.len(), 6, "{a:?}");
    assert_eq!(a[..4], ["DUNNO", "DUNNO", "DUNNO", "DUNNO"]);
    assert!(
        a[4].starts_with("450 4.7.1 You reached your limit of 2 recipients per 1h; try again in "),
        "{}",
        a[4]
    );
    assert_eq!(a[5], "DUNNO");
    // One log line, for the one refusal, worded as the plug-in's.
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", f.stderr);
    assert!(
        lines[0].starts_with(
            "overlimit-policy: refused alice@example.com: limit 2/1h reached (2 counted, room in "
        ) && lines[0].ends_with("; recipient someone@remote.example; answered 450"),
        "{}",
        lines[0]
    );
    // The same counter file the plug-in uses, under the canonical name.
    assert_eq!(s.counter_files(), ["alice@example.com"]);
}

#[test]
fn the_client_address_counts_without_a_login_in_canonical_form() {
    let s = Sandbox::with_limits("2001:db8::7:1\n");
    let ask = request("RCPT", "", "2001:DB8:0::7", "x@remote.example");
    let f = spawn_mode(&env(&s, &[]), ask.repeat(2).as_bytes());
    let a = actions(&f.stdout);
    assert_eq!(a[0], "DUNNO");
    assert!(a[1].starts_with("450 4.7.1 "), "{a:?}");
    assert_eq!(s.counter_files(), ["2001:db8::7"]);
    // An IPv4-mapped address is the IPv4 client.
    let s = Sandbox::with_limits("192.0.2.1:1\n");
    let ask = request("RCPT", "", "::ffff:192.0.2.1", "x@remote.example");
    let a = actions(&spawn_mode(&env(&s, &[]), ask.repeat(2).as_bytes()).stdout);
    assert_eq!(a[0], "DUNNO");
    assert!(a[1].starts_with("450 "), "{a:?}");
    assert_eq!(s.counter_files(), ["192.0.2.1"]);
}

#[test]
fn each_action_answers_with_its_own_code() {
    for (action, prefix) in [
        (
            "defer",
            "450 4.7.1 You reached your limit of 1 recipients; ask your provider",
        ),
        (
            "reject",
            "550 5.7.1 You reached your limit of 1 recipients; ask your provider",
        ),
        (
            "hold",
            "HOLD You reached your limit of 1 recipients; ask your provider",
        ),
    ] {
        let s = Sandbox::with_limits("u@example.com:1\n");
        let extra = [("OVERLIMIT_POLICY_ACTION", action)];
        let f = spawn_mode(&env(&s, &extra), rcpt("u@example.com").repeat(3).as_bytes());
        let a = actions(&f.stdout);
        assert_eq!(a[0], "DUNNO", "{action}");
        assert!(
            a[1].starts_with(prefix) && a[2].starts_with(prefix),
            "{action}: {a:?}"
        );
        // Held recipients are tallied as refused, never counted as sent.
        let out = s.admin(&["status", "--json", "u@example.com"]).run();
        assert_eq!(
            common::json_number(&out.stdout, "count"),
            1,
            "{}",
            out.stdout
        );
        assert_eq!(
            common::json_number(&out.stdout, "refused"),
            2,
            "{}",
            out.stdout
        );
    }
}

#[test]
fn an_unknown_action_is_refused_at_start_naming_the_variable() {
    let s = Sandbox::with_limits(":1\n");
    let extra = [("OVERLIMIT_POLICY_ACTION", "bounce")];
    let f = spawn_mode(&env(&s, &extra), rcpt("u@example.com").as_bytes());
    assert_eq!(f.code, Some(2));
    assert_eq!(f.stdout, "");
    assert!(
        f.stderr
            .contains("OVERLIMIT_POLICY_ACTION=bounce: use defer, reject or hold"),
        "{}",
        f.stderr
    );
}

#[test]
fn monitor_mode_answers_dunno_logs_and_counts() {
    let s = Sandbox::with_limits("u@example.com:1\n");
    let extra = [("OVERLIMIT_MONITOR", "1")];
    let f = spawn_mode(&env(&s, &extra), rcpt("u@example.com").repeat(3).as_bytes());
    assert_eq!(actions(&f.stdout), ["DUNNO", "DUNNO", "DUNNO"]);
    assert_eq!(
        f.stderr
            .matches("monitor: would refuse u@example.com")
            .count(),
        2
    );
    assert!(f.stderr.contains("would answer 450"), "{}", f.stderr);
    assert_eq!(s.total("u@example.com"), Some(3));
}

#[test]
fn an_internal_error_answers_dunno_or_451_when_fail_closed() {
    let s = Sandbox::with_limits(":5\n");
    // The counter directory is a file: every count fails.
    std::fs::remove_dir(s.dir()).unwrap();
    std::fs::write(s.dir(), "").unwrap();
    let f = spawn_mode(&env(&s, &[]), rcpt("u@example.com").as_bytes());
    assert_eq!(actions(&f.stdout), ["DUNNO"]);
    assert!(
        f.stderr
            .contains("overlimit-policy: internal error, recipient passes uncounted: "),
        "{}",
        f.stderr
    );
    let extra = [("OVERLIMIT_FAILCLOSED", "1")];
    let f = spawn_mode(&env(&s, &extra), rcpt("u@example.com").as_bytes());
    assert_eq!(
        actions(&f.stdout),
        ["451 4.3.0 Temporary error checking the sending limit"]
    );
    assert!(
        f.stderr.contains("internal error, answering 451: "),
        "{}",
        f.stderr
    );
    std::fs::remove_file(s.dir()).unwrap();
    std::fs::create_dir(s.dir()).unwrap();
}

/// Holds an exclusive lock on `path` with flock(1) for `seconds`.
fn hold_lock(path: &std::path::Path, seconds: &str) -> std::process::Child {
    let child = Command::new("flock")
        .arg(path)
        .args(["sleep", seconds])
        .spawn()
        .expect("flock(1) from util-linux");
    let started = Instant::now();
    // flock(1) takes the lock before it starts sleep: wait until it holds.
    let free = || {
        let probe = Command::new("flock")
            .arg("-n")
            .arg(path)
            .arg("true")
            .status();
        probe.unwrap().success()
    };
    while free() {
        assert!(started.elapsed() < process::HANG);
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn a_counter_locked_too_long_is_answered_within_about_a_second() {
    let s = Sandbox::with_limits(":5\n");
    let counter = s.dir().join("u@example.com");
    std::fs::write(&counter, "").unwrap();
    let mut holder = hold_lock(&counter, "30");
    let started = Instant::now();
    let f = spawn_mode(
        &env(&s, &[("OVERLIMIT_FAILCLOSED", "1")]),
        rcpt("u@example.com").as_bytes(),
    );
    let took = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        actions(&f.stdout),
        ["451 4.3.0 Temporary error checking the sending limit"]
    );
    assert!(
        f.stderr.contains("internal error, answering 451"),
        "{}",
        f.stderr
    );
    // The lock deadline is 1 s; the bound only catches a hang.
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn malformed_requests_get_no_answer_and_close_the_connection() {
    let long_line = format!(
        "request=smtpd_access_policy\nhelo_name={}\n\n",
        "a".repeat(9000)
    );
    let mut many = "request=smtpd_access_policy\n".to_string();
    for i in 0..300 {
        many += &format!("x{i}=1\n");
    }
    many += "\n";
    let cases = [
        (
            "not a name=value line",
            "request=smtpd_access_policy\nHELO client\n\n".to_string(),
        ),
        ("a line longer than 8192 bytes", long_line),
        ("more than 256 attributes in one request", many),
        (
            "no request=smtpd_access_policy",
            "protocol_state=RCPT\n\n".to_string(),
        ),
        (
            "attribute sasl_username given twice",
            "request=smtpd_access_policy\nsasl_username=a\nsasl_username=b\n\n".to_string(),
        ),
    ];
    let truncated = (
        "connection closed in the middle of a request",
        "request=smtpd_access_policy\nprotocol_state=RCPT\n".to_string(),
    );
    for (why, bad) in cases.into_iter().chain([truncated]) {
        let s = Sandbox::with_limits(":5\n");
        // A good request, then the bad one, then one that is never answered
        // (none after a request cut short: it would be read as its rest).
        let mut input = rcpt("u@example.com") + &bad;
        if !why.contains("middle") {
            input += &rcpt("u@example.com");
        }
        let f = spawn_mode(&env(&s, &[]), input.as_bytes());
        assert_eq!(actions(&f.stdout), ["DUNNO"], "{why}");
        assert!(
            f.stderr
                .contains("closing the connection without an answer"),
            "{why}: {}",
            f.stderr
        );
        assert!(f.stderr.contains(why), "{why}: {}", f.stderr);
        assert_eq!(f.code, Some(1), "{why}");
        assert_eq!(s.total("u@example.com"), Some(1), "{why}");
    }
}

#[test]
fn under_spawn_logs_never_reach_the_socket_that_is_also_stderr() {
    // spawn(8) gives stdin, stdout and stderr one socket: a log line there
    // would be read by smtpd as a reply.
    let s = Sandbox::with_limits("u@example.com:1\n");
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(process::HANG)).unwrap();
    let fd = std::os::fd::OwnedFd::from(theirs);
    let mut child = command(&env(&s, &[]), &[])
        .stdin(Stdio::from(fd.try_clone().unwrap()))
        .stdout(Stdio::from(fd.try_clone().unwrap()))
        .stderr(Stdio::from(fd))
        .spawn()
        .unwrap();
    let mut peer = Peer::new(ours);
    assert_eq!(peer.ask(&rcpt("u@example.com")).as_deref(), Some("DUNNO"));
    let refused = peer.ask(&rcpt("u@example.com")).unwrap();
    assert!(refused.starts_with("450 4.7.1 "), "{refused}");
    peer.stream().shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    peer.stream().read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "nothing but replies on the socket");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_running_server_notices_an_edited_control_file() {
    let s = Sandbox::with_limits("u@example.com:1\n");
    let path = policy::socket_in(&s.root);
    let d = Daemon::unix(&env(&s, &[]), &path);
    let mut peer = Peer::unix(&path);
    assert_eq!(peer.ask(&rcpt("u@example.com")).as_deref(), Some("DUNNO"));
    assert!(peer
        .ask(&rcpt("u@example.com"))
        .unwrap()
        .starts_with("450 "));
    s.limits("u@example.com:5\n");
    assert_eq!(peer.ask(&rcpt("u@example.com")).as_deref(), Some("DUNNO"));
    // Compiled to cdb, and the cdb edited by a new compile: still current.
    assert_eq!(s.admin(&["compile"]).run().code, Some(0));
    assert_eq!(peer.ask(&rcpt("u@example.com")).as_deref(), Some("DUNNO"));
    s.limits("u@example.com:3\n");
    assert_eq!(s.admin(&["compile"]).run().code, Some(0));
    assert!(peer
        .ask(&rcpt("u@example.com"))
        .unwrap()
        .starts_with("450 "));
    let f = d.stop();
    assert_eq!(f.code, Some(0), "{}", f.stderr);
}

#[test]
fn many_connections_at_once_count_exactly() {
    let s = Sandbox::with_limits(":100/1h\n");
    let path = policy::socket_in(&s.root);
    let d = Daemon::unix(&env(&s, &[]), &path);
    // 0660: the socket's group (Postfix's) may connect, nobody else.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut peer = Peer::unix(&path);
                let mut refused = 0;
                for i in 0..100 {
                    let user = format!("user{}@example.com", (t * 100 + i) % 8);
                    let a = peer.ask(&rcpt(&user)).unwrap();
                    if a != "DUNNO" {
                        assert!(a.starts_with("450 4.7.1 "), "{a}");
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let refused: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // 1,600 requests over 8 users at 100 each: exactly 800 pass.
    assert_eq!(refused, 800);
    for u in 0..8 {
        assert_eq!(s.total(&format!("user{u}@example.com")), Some(100));
    }
    let f = d.stop();
    assert_eq!(f.code, Some(0));
    assert_eq!(f.stderr.lines().count(), 800, "one log line per refusal");
}

#[test]
fn a_malformed_request_disturbs_no_other_connection() {
    let s = Sandbox::with_limits(":10\n");
    let path = policy::socket_in(&s.root);
    let d = Daemon::unix(&env(&s, &[]), &path);
    let mut good = Peer::unix(&path);
    assert_eq!(good.ask(&rcpt("a@example.com")).as_deref(), Some("DUNNO"));
    let mut bad = Peer::unix(&path);
    assert_eq!(bad.ask("garbage\n\n"), None);
    assert_eq!(good.ask(&rcpt("a@example.com")).as_deref(), Some("DUNNO"));
    assert_eq!(
        Peer::unix(&path).ask(&rcpt("a@example.com")).as_deref(),
        Some("DUNNO")
    );
    assert_eq!(s.total("a@example.com"), Some(3));
    drop(d.stop());
}

#[test]
fn sigterm_finishes_the_answer_in_progress_and_removes_the_socket() {
    let s = Sandbox::with_limits(":10\n");
    let path = policy::socket_in(&s.root);
    let d = Daemon::unix(&env(&s, &[]), &path);
    let mut idle = Peer::unix(&path);
    assert_eq!(idle.ask(&rcpt("a@example.com")).as_deref(), Some("DUNNO"));
    // A request in progress: its counter is locked for a moment, well under
    // the 1 s lock deadline, when SIGTERM comes.
    let counter = s.dir().join("b@example.com");
    std::fs::write(&counter, "").unwrap();
    let mut holder = hold_lock(&counter, "0.5");
    let mut busy = Peer::unix(&path);
    busy.send(rcpt("b@example.com").as_bytes());
    std::thread::sleep(Duration::from_millis(150));
    let f = d.stop();
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    holder.wait().unwrap();
    assert_eq!(
        busy.reply().as_deref(),
        Some("DUNNO"),
        "the answer in progress is sent"
    );
    assert_eq!(s.total("b@example.com"), Some(1));
    // The idle connection is closed, the socket gone, nothing logged.
    assert_eq!(idle.reply(), None);
    assert!(!path.exists());
    assert_eq!(f.stderr, "");
    assert!(f.elapsed < Duration::from_secs(5), "{:?}", f.elapsed);
}

#[test]
fn inet_listening_serves_tcp_clients() {
    let s = Sandbox::with_limits("192.0.2.10:1\n");
    // A free port: bound and released; the daemon takes it right after.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("inet:127.0.0.1:{port}");
    let d = Daemon::start(command(&env(&s, &[]), &["--listen", &address]), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(process::HANG)).unwrap();
    let mut peer = Peer::new(stream);
    let ask = request("RCPT", "", "192.0.2.10", "x@remote.example");
    assert_eq!(peer.ask(&ask).as_deref(), Some("DUNNO"));
    assert!(peer.ask(&ask).unwrap().starts_with("450 4.7.1 "));
    let f = d.stop();
    assert_eq!(f.code, Some(0));
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
}

#[test]
fn a_stale_socket_is_replaced_but_no_other_file_or_live_server() {
    let s = Sandbox::with_limits(":10\n");
    let path = policy::socket_in(&s.root);
    // A socket nobody listens on any more, as a killed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let d = Daemon::unix(&env(&s, &[]), &path);
    // A second daemon on the same path refuses to start.
    let started = Instant::now();
    let address = format!("unix:{}", path.display());
    let child = command(&env(&s, &[]), &["--listen", &address])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let f = policy::finish(child, started);
    assert_eq!(f.code, Some(2));
    assert!(
        f.stderr.contains("another server is listening there"),
        "{}",
        f.stderr
    );
    assert_eq!(
        Peer::unix(&path).ask(&rcpt("a@example.com")).as_deref(),
        Some("DUNNO")
    );
    drop(d.stop());
    // A regular file is never removed.
    std::fs::write(&path, "precious").unwrap();
    let child = command(&env(&s, &[]), &["--listen", &address])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let f = policy::finish(child, Instant::now());
    assert_eq!(f.code, Some(2));
    assert!(
        f.stderr.contains("exists and is not a socket"),
        "{}",
        f.stderr
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn help_version_and_bad_flags() {
    let run = |args: &[&str]| {
        let child = command(&[], args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        policy::finish(child, Instant::now())
    };
    let f = run(&["--help"]);
    assert_eq!(f.code, Some(0));
    assert!(f.stdout.contains("--listen unix:PATH"), "{}", f.stdout);
    let f = run(&["--version"]);
    assert_eq!(
        (f.code, f.stdout.trim()),
        (
            Some(0),
            concat!("overlimit-policy ", env!("CARGO_PKG_VERSION"))
        )
    );
    for (args, says) in [
        (&["--lisen", "unix:/x"][..], "unknown flag --lisen"),
        (
            &["--listen"][..],
            "--listen needs unix:PATH or inet:HOST:PORT",
        ),
        (
            &["--listen", "tcp:1.2.3.4:5"][..],
            "--listen tcp:1.2.3.4:5: use unix:PATH or inet:HOST:PORT",
        ),
        (
            &["--listen", "inet:127.0.0.1:99999"][..],
            "the port is not a number",
        ),
        (&["--listen", "inet:127.0.0.1"][..], "no port"),
        (&["stray"][..], "unexpected argument stray"),
    ] {
        let f = run(args);
        assert_eq!(f.code, Some(2), "{args:?}");
        assert!(
            f.stderr.starts_with("overlimit-policy: ") && f.stderr.contains(says),
            "{args:?}: {}",
            f.stderr
        );
        assert_eq!(f.stdout, "");
    }
}

#[test]
fn one_limit_is_shared_with_the_qmail_plug_in() {
    // A host running both: qmail's SMTP through rcptcheck-overlimit, Postfix
    // through the policy service, one control file and counter directory.
    let s = Sandbox::with_limits("info@example.com:3\n");
    assert_eq!(s.user("info@example.com").code(), 112);
    let f = spawn_mode(&env(&s, &[]), rcpt("INFO@example.com").repeat(3).as_bytes());
    let a = actions(&f.stdout);
    assert_eq!(a[..2], ["DUNNO", "DUNNO"]);
    assert!(a[2].starts_with("450 4.7.1 "), "{a:?}");
    assert_eq!(s.user("info@example.com").code(), 113);
}

#[test]
fn the_domain_counter_is_shared_and_named_in_the_reply() {
    let s = Sandbox::with_limits("*@example.com:10\n@example.com:2\n");
    let input = rcpt("a@example.com") + &rcpt("b@example.com") + &rcpt("c@example.com");
    let a = actions(&spawn_mode(&env(&s, &[]), input.as_bytes()).stdout);
    assert_eq!(a[..2], ["DUNNO", "DUNNO"]);
    assert!(
        a[2].starts_with("450 4.7.1 Your domain example.com reached its limit of 2 recipients"),
        "{a:?}"
    );
}

#[test]
fn a_bad_control_line_is_logged_once_per_edit_not_per_request() {
    let s = Sandbox::with_limits("u@example.com:5\nbroken line without limits\n");
    let path = policy::socket_in(&s.root);
    let d = Daemon::unix(&env(&s, &[]), &path);
    let mut peer = Peer::unix(&path);
    for _ in 0..3 {
        assert_eq!(peer.ask(&rcpt("u@example.com")).as_deref(), Some("DUNNO"));
    }
    // An edit (one byte longer) is a new file: looked up, and logged, again.
    s.limits("u@example.com:50\nbroken line without limits\n");
    assert_eq!(peer.ask(&rcpt("u@example.com")).as_deref(), Some("DUNNO"));
    let f = d.stop();
    let notes: Vec<&str> = f.stderr.lines().filter(|l| l.contains("line 2")).collect();
    assert_eq!(notes.len(), 2, "{}", f.stderr);
    assert!(
        notes[0].starts_with(&format!(
            "overlimit-policy: {}: line 2",
            s.control().display()
        )),
        "{}",
        notes[0]
    );
}

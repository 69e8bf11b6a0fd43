//! overlimit-policy behind a real Postfix: Debian's Postfix in a private
//! instance (tests/support/postfix.rs) with smtpd on a loopback port, SMTP
//! AUTH from Cyrus SASL, swaks as the customer's mail client, and the
//! main.cf/master.cf lines of control-examples/. Both ways of running the
//! service are exercised: spawn(8) from master.cf, and the --listen daemon.
//!
//! Needs root and the packages postfix, swaks, sasl2-bin, libsasl2-modules
//! and util-linux (setpriv); without them it says `skipped: WHY` on stderr,
//! and under CI=true it fails instead.

mod common;
#[path = "support/policy.rs"]
mod policy;
#[path = "support/postfix.rs"]
mod postfix;
#[path = "support/process.rs"]
mod process;

use postfix::{skip_unless_available, Postfix, RUN_AS};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

const QUEUED: &str = "250 2.0.0 Ok: queued";

/// Recipients counted for `client`, by `overlimit status`; `None` if it
/// has no counter.
fn counted(pf: &Postfix, client: &str) -> Option<u64> {
    let file = pf.counters().join(client);
    if !file.exists() {
        return None;
    }
    let out = common::Run::new(common::ADMIN)
        .env("RELAYLIMITS", pf.control())
        .env("OVERLIMITDIR", pf.counters())
        .args(&["status", "--json", client])
        .run();
    Some(common::json_number(&out.stdout, "count"))
}

/// The files in the counter directory, sorted.
fn counter_files(pf: &Postfix) -> Vec<String> {
    // Dot files are not counters (the history journal).
    let mut v: Vec<String> = std::fs::read_dir(pf.counters())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// The qmail plug-in for SMTP AUTH user `user` on the same control file and
/// counters, as qmail-smtpd runs it (as the same account); its exit code.
fn qmail_recipient(pf: &Postfix, user: &str) -> Option<i32> {
    pf.as_policy_user("rcptcheck-overlimit")
        .env("RELAYCLIENT", "")
        .env("SMTPAUTHUSER", user)
        .env("RECIPIENT", "someone@remote.example")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .code()
}

#[test]
fn spawned_from_master_cf_it_defers_a_login_after_its_limit_and_counts_only_relayed_mail() {
    if skip_unless_available() {
        return;
    }
    let users = ["alice@example.com", "bob@example.com"];
    let pf = Postfix::with_policy_service(
        "policy-spawn",
        &users,
        "alice@example.com:3\nbob@example.com:4\n",
    );

    // Three relayed messages pass and are delivered; the fourth is deferred
    // at RCPT with the limit named.
    for i in 1..=3 {
        let t = pf.swaks(
            Some("alice@example.com"),
            &format!("r{i}@remote.example"),
            &format!("alice-{i}"),
        );
        assert!(t.contains(QUEUED), "message {i}:\n{t}");
    }
    let t = pf.swaks(Some("alice@example.com"), "r4@remote.example", "alice-4");
    assert!(
        t.contains("<** 450 4.7.1 <r4@remote.example>: Recipient address rejected: You reached your limit of 3 recipients"),
        "{t}"
    );
    assert!(!t.contains(QUEUED), "{t}");
    pf.wait_until_delivered();
    let mbox = pf.mailbox("nobody");
    for i in 1..=3 {
        assert!(mbox.contains(&format!("alice-{i}")), "{mbox}");
    }
    assert!(!mbox.contains("alice-4"));
    assert_eq!(counted(&pf, "alice@example.com"), Some(3));

    // Mail for this server's own domain is not relaying: accepted from
    // anyone, alice over her limit included, and never counted.
    let t = pf.swaks(None, "nobody@localhost", "inbound-1");
    assert!(t.contains(QUEUED), "{t}");
    let t = pf.swaks(Some("alice@example.com"), "nobody@localhost", "inbound-2");
    assert!(t.contains(QUEUED), "{t}");
    // A relay attempt without AUTH is refused by Postfix before the policy
    // service is asked: no counter for the client's address.
    let t = pf.swaks(None, "victim@remote.example", "relay-attempt");
    assert!(
        t.contains("<** 554 5.7.1 <victim@remote.example>: Relay access denied"),
        "{t}"
    );
    pf.wait_until_delivered();
    let mbox = pf.mailbox("nobody");
    assert!(
        mbox.contains("inbound-1") && mbox.contains("inbound-2"),
        "{mbox}"
    );
    assert_eq!(counted(&pf, "alice@example.com"), Some(3));
    assert_eq!(counter_files(&pf), ["alice@example.com"]);
    // The policy service, as Postfix's account, journals the episode.
    let journal = std::fs::read_to_string(pf.counters().join(".journal")).unwrap_or_default();
    assert!(
        journal.contains("\"event\":\"over\",\"client\":\"alice@example.com\""),
        "{journal}"
    );

    // One name, one limit: bob sends through qmail's plug-in on a host that
    // shares this control file and counter directory, then through Postfix.
    assert_eq!(qmail_recipient(&pf, "bob@example.com"), Some(112));
    assert_eq!(qmail_recipient(&pf, "bob@example.com"), Some(112));
    for i in 1..=2 {
        let t = pf.swaks(
            Some("bob@example.com"),
            &format!("b{i}@remote.example"),
            &format!("bob-{i}"),
        );
        assert!(t.contains(QUEUED), "{t}");
    }
    let t = pf.swaks(Some("bob@example.com"), "b3@remote.example", "bob-3");
    assert!(t.contains("<** 450 4.7.1 "), "{t}");
    assert_eq!(qmail_recipient(&pf, "bob@example.com"), Some(113));
    assert_eq!(counted(&pf, "bob@example.com"), Some(4));
    pf.wait_until_delivered();
    assert!(!pf.mailbox("nobody").contains("bob-3"));
}

#[test]
fn the_daemon_holds_over_limit_mail_and_stops_cleanly_on_sigterm() {
    if skip_unless_available() {
        return;
    }
    let pf = Postfix::with_policy_service(
        "policy-daemon",
        &["carol@example.com"],
        "carol@example.com:1\n",
    );
    // The socket's directory in the queue, so that a chrooted smtpd reaches
    // it too; setgid postfix, so the socket (0660) is Postfix's to use.
    let dir = pf.root.join("queue/overlimit");
    let ok = std::process::Command::new("install")
        .args(["-d", "-o", RUN_AS, "-g", "postfix", "-m", "2750"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(ok.success());
    let socket = dir.join("policy.sock");
    let mut cmd = pf.as_policy_user("overlimit-policy");
    cmd.env("OVERLIMIT_POLICY_ACTION", "hold")
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()));
    let probe = socket.clone();
    let daemon = policy::Daemon::start(cmd, move || UnixStream::connect(&probe).is_ok());
    // As control-examples/postfix-main.cf says for the daemon.
    let main_cf = std::fs::read_to_string(pf.config().join("main.cf")).unwrap();
    let policy_line = main_cf
        .lines()
        .find(|l| l.contains("check_policy_service"))
        .unwrap()
        .replace(
            "unix:private/overlimit-policy",
            "unix:overlimit/policy.sock",
        );
    pf.reconfigure(&[&format!(
        "smtpd_recipient_restrictions = permit_auth_destination, {}",
        policy_line.trim()
    )]);

    let t = pf.swaks(Some("carol@example.com"), "c1@remote.example", "carol-1");
    assert!(t.contains(QUEUED), "{t}");
    pf.wait_until_delivered();
    // Over the limit: accepted, but into the hold queue, delivered nowhere.
    let t = pf.swaks(Some("carol@example.com"), "c2@remote.example", "carol-2");
    assert!(t.contains(QUEUED), "{t}");
    pf.wait_until("held", || pf.queue().contains(r#""queue_name": "hold""#));
    let queue = pf.queue();
    assert_eq!(queue.lines().count(), 1, "{queue}");
    assert!(
        queue.contains(r#""sender": "carol@example.com""#),
        "{queue}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let mbox = pf.mailbox("nobody");
    assert!(
        mbox.contains("carol-1") && !mbox.contains("carol-2"),
        "{mbox}"
    );
    // The held recipient is tallied as refused, not counted as sent.
    assert_eq!(counted(&pf, "carol@example.com"), Some(1));

    let started = Instant::now();
    let f = daemon.stop();
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!socket.exists(), "the socket is removed");
    assert!(
        f.stderr.contains("overlimit-policy: refused carol@example.com: limit 1 reached (1 counted, until reset); recipient c2@remote.example; answered HOLD"),
        "{}",
        f.stderr
    );
}

//! `overlimit-notify`, the shipped OVERLIMIT_NOTIFY: run by the real plug-in
//! once per episode, mailing through a stand-in sendmail that records its
//! arguments and input; capped per hour in all; never holding up the plug-in.

mod common;
#[path = "support/process.rs"]
mod process;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NOTIFY: &str = env!("CARGO_BIN_EXE_overlimit-notify");

/// A sendmail that appends its arguments and the message to `mails/N`
/// (after sleeping `delay` seconds and exiting `code`).
fn stand_in(s: &Sandbox, delay: u32, code: i32) -> PathBuf {
    let mails = s.root.join("mails");
    std::fs::create_dir_all(&mails).unwrap();
    let path = s.root.join("sendmail");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nsleep {delay}\nf={}/$$\n{{ echo \"ARGS $*\"; cat; }} > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\nexit {code}\n",
            mails.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["755", path.to_str().unwrap()])
        .status()
        .unwrap();
    path
}

/// The mails the stand-in got, once `n` are there (or after `HANG`; 0:
/// what is there now).
fn mails(s: &Sandbox, n: usize) -> Vec<String> {
    let deadline = Instant::now() + HANG;
    loop {
        let found: Vec<String> = std::fs::read_dir(s.root.join("mails"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none())
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn notify(s: &Sandbox, sendmail: &Path, args: &[&str]) -> Run {
    Run::new(NOTIFY)
        .args(args)
        .env("OVERLIMITDIR", s.dir())
        .env("OVERLIMIT_NOTIFY_SENDMAIL", sendmail)
        .env("OVERLIMIT_NOTIFY_TO", "postmaster@example.net")
}

#[test]
fn the_plugin_mails_the_administrator_once_per_episode() {
    let s = Sandbox::with_limits("alice@example.com:2\n");
    let sendmail = stand_in(&s, 0, 0);
    let plugin = || {
        s.user("alice@example.com")
            .env("OVERLIMIT_NOTIFY", NOTIFY)
            .env("OVERLIMIT_NOTIFY_SENDMAIL", &sendmail)
            .env("OVERLIMIT_NOTIFY_TO", "postmaster@example.net")
            .code()
    };
    let codes: Vec<i32> = (0..5).map(|_| plugin()).collect();
    assert_eq!(codes, [112, 112, 113, 113, 113]);
    let got = mails(&s, 1);
    // Give a second notifier, if one were wrongly started, time to show.
    std::thread::sleep(Duration::from_millis(300));
    let got_later = mails(&s, 0);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got_later.len(), 1, "{got_later:?}");
    let mail = &got[0];
    assert!(
        mail.starts_with("ARGS -i -- postmaster@example.net\n"),
        "{mail}"
    );
    assert!(mail.contains("\nTo: postmaster@example.net\n"), "{mail}");
    assert!(
        mail.contains("\nSubject: overlimit: alice@example.com reached 2\n"),
        "{mail}"
    );
    assert!(mail.contains("overlimit reset alice@example.com"), "{mail}");
    // After a reset, a new episode is mailed again.
    assert_eq!(s.admin(&["reset", "alice@example.com"]).code(), 0);
    let codes: Vec<i32> = (0..3).map(|_| plugin()).collect();
    assert_eq!(codes, [112, 112, 113]);
    assert_eq!(mails(&s, 2).len(), 2);
}

#[test]
fn a_slow_sendmail_does_not_hold_up_the_plugin() {
    let s = Sandbox::with_limits(":1\n");
    let sendmail = stand_in(&s, 3, 0);
    assert_eq!(s.ip("192.0.2.1").code(), 112);
    let o = s
        .ip("192.0.2.1")
        .env("OVERLIMIT_NOTIFY", NOTIFY)
        .env("OVERLIMIT_NOTIFY_SENDMAIL", &sendmail)
        .run();
    assert_eq!(o.code, Some(113), "{o:?}");
    // The plug-in's own run, not the notifier's (which holds its stderr).
    assert!(o.elapsed < Duration::from_secs(2), "{o:?}");
    assert_eq!(mails(&s, 1).len(), 1);
}

#[test]
fn at_most_max_mails_an_hour_and_the_held_back_are_named_later() {
    let s = Sandbox::new();
    let sendmail = stand_in(&s, 0, 0);
    for (i, client) in ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]
        .iter()
        .enumerate()
    {
        let o = notify(&s, &sendmail, &[client, "10/1h", "10", "1999999999"])
            .env("OVERLIMIT_NOTIFY_MAX", "2")
            .run();
        assert_eq!(o.code, Some(0), "{o:?}");
        if i < 2 {
            assert!(o.stderr.contains("mailed postmaster@example.net"), "{o:?}");
        } else {
            assert!(o.stderr.contains("not mailed, 2 mails sent"), "{o:?}");
        }
    }
    assert_eq!(mails(&s, 2).len(), 2);
    // An hour later (the state file's times moved back), the next one goes
    // and says how many were held back.
    let state = s.dir().join(".notify");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("held 2\n"), "{text}");
    let long_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 4000;
    std::fs::write(
        &state,
        format!("sent {long_ago}\nsent {long_ago}\nheld 2\n"),
    )
    .unwrap();
    let o = notify(&s, &sendmail, &["e@x.example", "5", "5", "reset"])
        .env("OVERLIMIT_NOTIFY_MAX", "2")
        .run();
    assert_eq!(o.code, Some(0), "{o:?}");
    let got = mails(&s, 3);
    let last = got.iter().find(|m| m.contains("e@x.example")).unwrap();
    assert!(
        last.contains("2 other notification(s) were held back"),
        "{last}"
    );
    assert!(last.contains("next overlimit-sweep"), "{last}");
}

#[test]
fn a_client_name_cannot_add_a_header() {
    let s = Sandbox::new();
    let sendmail = stand_in(&s, 0, 0);
    let o = notify(
        &s,
        &sendmail,
        &["x@y\nBcc: victim@example.org", "1", "1", "reset"],
    )
    .run();
    assert_eq!(o.code, Some(0), "{o:?}");
    let mail = &mails(&s, 1)[0];
    assert!(!mail.lines().any(|l| l.starts_with("Bcc:")), "{mail}");
    assert!(mail.contains("x@y\\x0aBcc: victim@example.org"), "{mail}");
}

#[test]
fn failures_are_named_and_exit_nonzero() {
    let s = Sandbox::new();
    let failing = stand_in(&s, 0, 75);
    let o = notify(&s, &failing, &["a@b", "1", "1", "reset"]).run();
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("sendmail: failed"), "{o:?}");
    let missing = s.root.join("no-sendmail");
    let o = notify(&s, &missing, &["a@b", "1", "1", "reset"]).run();
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("no-sendmail: cannot start"), "{o:?}");
    let o = notify(&s, &failing, &["a@b", "1"]).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("expected 4 arguments, got 2"), "{o:?}");
    let o = notify(&s, &failing, &["a@b", "1", "1", "reset"])
        .env("OVERLIMIT_NOTIFY_MAX", "lots")
        .run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("OVERLIMIT_NOTIFY_MAX=lots"), "{o:?}");
    // The state file is never reached through a symbolic link.
    let state = s.dir().join(".notify");
    std::fs::remove_file(&state).ok();
    std::os::unix::fs::symlink(s.root.join("elsewhere"), &state).unwrap();
    let o = notify(&s, &failing, &["a@b", "1", "1", "reset"]).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains(".notify"), "{o:?}");
    assert!(!s.root.join("elsewhere").exists());
    let o = Run::new(NOTIFY).arg("--version").run();
    assert_eq!(o.code, Some(0));
    assert!(o.stdout.starts_with("overlimit-notify "), "{o:?}");
}

#[test]
fn the_policy_service_mails_once_per_episode_too() {
    let s = Sandbox::with_limits("bob@example.com:1\n");
    let sendmail = stand_in(&s, 0, 0);
    let one = "request=smtpd_access_policy\nprotocol_state=RCPT\n\
               client_address=192.0.2.10\nsasl_username=bob@example.com\n\
               recipient=someone@remote.example\n\n";
    // spawn mode, as Postfix's spawn(8) runs it: requests on stdin.
    let mut policy = std::process::Command::new(env!("CARGO_BIN_EXE_overlimit-policy"));
    policy
        .env_clear()
        .env("RELAYLIMITS", s.control())
        .env("OVERLIMITDIR", s.dir())
        .env("OVERLIMIT_NOTIFY", NOTIFY)
        .env("OVERLIMIT_NOTIFY_SENDMAIL", &sendmail);
    let replies = process::feed(policy, one.repeat(3).as_bytes()).stdout;
    assert_eq!(replies.matches("action=DUNNO").count(), 1, "{replies}");
    assert_eq!(replies.matches("action=450 4.7.1").count(), 2, "{replies}");
    let got = mails(&s, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mails(&s, 0).len(), 1, "{got:?}");
    assert!(
        got[0].contains("Subject: overlimit: bob@example.com reached 1\n"),
        "{got:?}"
    );
    assert!(got[0].starts_with("ARGS -i -- root\n"), "{got:?}");
}

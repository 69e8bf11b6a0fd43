//! Pins issue 13's block: `overlimit block` stops a client at once with no
//! edit of the control file, the real plug-in refuses it with the reason in
//! its reply and log line, `status` shows it (text and JSON), the sweep keeps
//! it, it ends by itself after `--for` or with `unblock`, and both ends are
//! journal lines that `history` shows.

mod common;
use common::*;
use std::time::{Duration, Instant};

const GO_ON: i32 = 112;
const OVER: i32 = 113;

fn admin_ok(s: &Sandbox, args: &[&str]) -> String {
    let o = s.admin(args).run();
    assert_eq!((o.code, o.stderr.as_str()), (Some(0), ""), "{o:?}");
    o.stdout
}

#[test]
fn a_block_refuses_at_once_shows_everywhere_and_unblock_lifts_it() {
    let s = Sandbox::with_limits("a@example.com:100\n");
    assert_eq!(s.user("a@example.com").code(), GO_ON);
    let out = admin_ok(&s, &["block", "--reason", "hacked site", "a@example.com"]);
    assert_eq!(out, "a@example.com: blocked until unblocked: hacked site\n");

    let o = s.user("a@example.com").env("OVERLIMIT_REPLY", "451").run();
    assert_eq!(o.code, Some(OVER), "{o:?}");
    assert!(
        o.fd4
            .starts_with("451 4.7.1 Blocked by the administrator until unblocked: hacked site"),
        "{o:?}"
    );
    assert!(
        o.stderr.contains(
            "refused a@example.com: blocked by the administrator until unblocked: hacked site; recipient"
        ),
        "{o:?}"
    );
    // Others are not touched.
    assert_eq!(s.user("b@example.com").code(), GO_ON);

    let table = admin_ok(&s, &["status", "a@example.com"]);
    assert!(
        table.contains("BLOCKED until unblocked: hacked site"),
        "{table}"
    );
    let json = s.status_json("a@example.com");
    assert!(
        json.contains("\"blocked\":{\"until\":null,\"reason\":\"hacked site\"}"),
        "{json}"
    );
    assert!(s.status_json("b@example.com").contains("\"blocked\":null"));

    // The sweep keeps a block, even on a counter with nothing else in it.
    let o = s.sweep(&[]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(s.user("a@example.com").code(), OVER);

    assert_eq!(
        admin_ok(&s, &["unblock", "a@example.com"]),
        "a@example.com: unblocked\n"
    );
    assert_eq!(s.user("a@example.com").code(), GO_ON);
    assert_eq!(
        admin_ok(&s, &["unblock", "a@example.com"]),
        "a@example.com: not blocked\n"
    );
    assert!(s.status_json("a@example.com").contains("\"blocked\":null"));

    let journal = std::fs::read_to_string(s.dir().join(".journal")).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 2, "{journal}");
    assert!(lines[0].contains("\"event\":\"block\",\"client\":\"a@example.com\",\"limit\":\"hacked site\",\"count\":0"), "{journal}");
    assert!(lines[1].contains("\"event\":\"unblock\""), "{journal}");
    let history = admin_ok(&s, &["history", "a@example.com"]);
    assert!(
        history.starts_with("a@example.com blocked: 1 episode"),
        "{history}"
    );
    assert!(history.contains("reason: hacked site"), "{history}");
}

#[test]
fn a_block_for_a_while_ends_by_itself() {
    let s = Sandbox::with_limits("a@example.com:100\n");
    let out = admin_ok(&s, &["block", "--for", "2s", "a@example.com"]);
    assert!(out.starts_with("a@example.com: blocked until 20"), "{out}");
    assert!(out.ends_with("Z: no reason given\n"), "{out}");
    let json = s.status_json("a@example.com");
    let until = json_number(json.split("\"blocked\":").nth(1).unwrap(), "until");
    assert!(until > 0, "{json}");
    assert_eq!(s.user("a@example.com").code(), OVER);
    let start = Instant::now();
    while s.user("a@example.com").code() == OVER {
        assert!(start.elapsed() < Duration::from_secs(10), "never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(s.status_json("a@example.com").contains("\"blocked\":null"));
    // Its history episode ends when the block said it would.
    let json = admin_ok(&s, &["history", "--json"]);
    assert_eq!(json_number(&json, "free"), until, "{json}");
}

#[test]
fn monitor_mode_only_logs_a_block() {
    let s = Sandbox::with_limits("a@example.com:100\n");
    admin_ok(&s, &["block", "--reason", "check", "a@example.com"]);
    let o = s.user("a@example.com").env("OVERLIMIT_MONITOR", "1").run();
    assert_eq!(o.code, Some(GO_ON), "{o:?}");
    assert!(
        o.stderr
            .contains("monitor: would refuse a@example.com: blocked by the administrator"),
        "{o:?}"
    );
}

#[test]
fn bad_block_commands_get_a_clear_answer_and_change_nothing() {
    let s = Sandbox::with_limits("a@example.com:100\n");
    for (args, says) in [
        (&["block"][..], "a CLIENT is needed"),
        (
            &["block", "--for", "soon", "a@example.com"],
            "--for soon: not a duration",
        ),
        (
            &["block", "--for", "2y", "a@example.com"],
            "--for 2y: not a duration",
        ),
        (
            &["block", "a@example.com", "b@example.com"],
            "one CLIENT at a time",
        ),
        (&["block", "--reason"], "--reason needs a value"),
        (
            &["unblock", "--for", "1d", "a@example.com"],
            "unknown flag --for",
        ),
        (&["block", "*@example.com"], "not a client name"),
        (&["block", "192.0.2.0/24"], "not a client name"),
    ] {
        let o = s.admin(args).run();
        assert_eq!(o.code, Some(2), "{args:?} {o:?}");
        assert!(o.stderr.contains(says), "{args:?} {o:?}");
    }
    assert!(s.counter_files().is_empty(), "{:?}", s.counter_files());
    assert_eq!(s.user("a@example.com").code(), GO_ON);
}

#[test]
fn a_client_refused_by_a_blocked_shared_counter_says_so_in_status() {
    let s = Sandbox::with_limits("@example.com:5000/1d\n");
    assert_eq!(s.user("web1@example.com").code(), GO_ON);
    admin_ok(&s, &["block", "--reason", "hacked", "@example.com"]);
    assert_eq!(s.user("web1@example.com").code(), OVER);

    // The whole list and the client named alone: the client's row says
    // who refuses it, not "ok".
    for table in [
        admin_ok(&s, &["status"]),
        admin_ok(&s, &["status", "web1@example.com"]),
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with("web1@example.com"))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            row.ends_with("refused by @example.com (BLOCKED until unblocked: hacked)"),
            "{table}"
        );
    }
    let json = s.status_json("web1@example.com");
    assert!(
        json.contains(
            "\"blocked\":null,\"blocked_by\":[{\"counter\":\"@example.com\",\"until\":null,\"reason\":\"hacked\"}]"
        ),
        "{json}"
    );

    admin_ok(&s, &["unblock", "@example.com"]);
    assert!(s
        .status_json("web1@example.com")
        .contains("\"blocked_by\":[]"));
    let table = admin_ok(&s, &["status"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web1@example.com") && l.ends_with(" ok")),
        "{table}"
    );
}

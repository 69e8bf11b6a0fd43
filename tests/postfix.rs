//! sendmail-overlimit in front of a real MTA: Debian's Postfix, a private
//! instance of tests/support/postfix.rs (its own configuration, queue and
//! mail spool in a temporary directory, no network service), with the
//! wrapper installed in the jail of tests/support/jail.rs, where the private
//! main.cf is bind-mounted over /etc/postfix so that /usr/sbin/sendmail (the
//! deliverer named in control/overlimit-sendmail) and postdrop use it; the
//! instance itself runs in the jail too, so that local(8) sees the jail's
//! accounts. Postfix is configured as the README says:
//! `authorized_submit_users = root, overlimit`, so a site that runs
//! Postfix's sendmail or postdrop itself is refused, and `forward_path =`,
//! so a site's `~/.forward` cannot fan one counted message
//! out to uncounted recipients.
//!
//! A corpus of hostile argument lists and messages goes through the wrapper;
//! Postfix's own log then says how many recipients were queued (qmgr's
//! `nrcpt=` for each message pickup took from the overlimit account), which
//! must equal what the counter counted.
//!
//! Postfix is installed by .ci/run from scripts/debian-packages. Without it,
//! or without root, the test fails with the reason under CI=true and is
//! skipped with the reason elsewhere.

mod common;
#[path = "support/jail.rs"]
mod jail;
#[path = "support/postfix.rs"]
mod postfix;
#[path = "support/process.rs"]
mod process;

use jail::{uid, Jail, QMAILDIR};
use postfix::{Options, Postfix};
use std::process::{Command, Stdio};

const PLUGIN: &str = env!("CARGO_BIN_EXE_rcptcheck-overlimit");

/// main.cf as the README says for local mail.
const LOCAL_MAIL_MAIN_CF: &str = "\
# Only the wrapper's privileged part (and root) may submit: a site that
# runs sendmail or postdrop itself is refused.
authorized_submit_users = root, overlimit
# No site-written forward files: local(8) would resend each message a site
# receives to every address in its ~/.forward, past any count.
forward_path =
";

/// A Postfix and a jail whose /etc/postfix is its configuration, the
/// wrapper's deliverer Postfix's sendmail; `None` when skipped.
fn setup(limits: &str) -> Option<(Postfix, Jail)> {
    if let Some(why) = postfix::unavailable().or_else(jail::unavailable) {
        common::skip(&why);
        return None;
    }
    let mut pf = Postfix::new("postfix");
    pf.configure(Options {
        main_cf: LOCAL_MAIL_MAIN_CF.into(),
        replaces_etc_postfix: true,
        ..Options::default()
    });
    let j = Jail::with_mounts(&[(&pf.config(), "/etc/postfix")])?;
    // Started inside the jail's mount namespace: local(8) then finds the
    // jail's accounts, as it would find the sites' on a server.
    pf.start(Some(j.command()));
    j.control("overlimit-sendmail", "/usr/sbin/sendmail\n");
    j.control("relaylimits", limits);
    Some((pf, j))
}

/// One hostile case: arguments, message, and the recipients it must reach
/// (`None`: refused, nothing queued).
struct Case {
    args: Vec<String>,
    message: Vec<u8>,
    env: Vec<(&'static str, &'static str)>,
    reaches: Option<u64>,
}

fn case(args: &[&str], message: &str, reaches: Option<u64>) -> Case {
    Case {
        args: args.iter().map(|a| a.to_string()).collect(),
        message: message.as_bytes().to_vec(),
        env: Vec::new(),
        reaches,
    }
}

fn corpus() -> Vec<Case> {
    let local = "nobody@localhost";
    let mut v = vec![
        // The headers read two ways.
        case(&["-t", "-i"], "To: x\\\", v1@victim.example, v2@victim.example, \"q\"(\")g:;\n\nx\n", None),
        case(&["-t", "-i"], "To: v1@victim.example v2@victim.example v3@victim.example [x] <a@x.example>\n\nx\n", None),
        // Flags after the first recipient; -Jf; empty arguments; --.
        case(&["-t", "-i", "", "-f", "v1@victim.example", "-f", "v2@victim.example"], "To: nobody@localhost\n\nx\n", None),
        case(&["-Jf", "v1@victim.example"], "Subject: J\n\nx\n", Some(1)),
        case(&["-i", ""], "To: nobody@localhost\n\nx\n", None),
        case(&["-i", "--", local], "Subject: dashes\n\nx\n", Some(1)),
        case(&["-i", "--", "-oQ/tmp@x"], "\n", None),
        // Clustered flags: -f takes the next argument.
        case(&["-tif", local], "To: root@localhost\n\nx\n", Some(1)),
        case(&["-tiFWeb", "-f", local], "To: root@localhost\n\nx\n", Some(1)),
        // Quoted strings with backslashes and commas, comments, groups.
        case(&["-t"], "To: \"a\\\"b, c\" <nobody@localhost>, (comment, v@victim.example) root@localhost\n\nx\n", Some(2)),
        case(&["-t"], "To: Friends: nobody@localhost, root@localhost;, undisclosed-recipients:;\n\nx\n", Some(2)),
        case(&["-t"], "To: \"unterminated, nobody@localhost, root@localhost\n\nx\n", None),
        case(&["-t"], "To: nobody@localhost (open, root@localhost\n\nx\n", None),
        // Domain literals, routes, encoded words.
        case(&["-t"], "To: v@[192.0.2.1], <@relay.example:nobody@localhost>\n\nx\n", Some(2)),
        case(&["-t"], "To: =?utf-8?q?J=C3=B6rg=2C_v=40victim=2Eexample?= <nobody@localhost>\n\nx\n", Some(1)),
        // (RFC 2047 allows no `@` or `.` in an encoded word of a phrase.)
        case(&["-t"], "To: =?utf-8?q?J=C3=B6rg=2C_v@victim.example?= <nobody@localhost>\n\nx\n", None),
        case(&["-t"], "To: \"x\"@victim.example\n\nx\n", None),
        // Resent- fields take over; folding; Bcc removed but sent to.
        case(&["-t"], "To: root@localhost\nResent-To: nobody@localhost\nResent-From: site@x\n\nx\n", Some(1)),
        case(&["-t"], "To: nobody@localhost,\r\n\troot@localhost\r\nCc:\r\n v1@victim.example\r\n\r\nx\r\n", Some(3)),
        case(&["-t"], "To: nobody@localhost\nBcc: root@localhost,\n v2@victim.example\n\ntoken-bcc\n", Some(3)),
        // NULs: in a recipient field refused, in the body sent.
        case(&["-t"], "To: nobody@localhost\0, v1@victim.example\n\nx\n", None),
        case(&["-t"], "To: nobody@localhost\n\nnul\0here\n", Some(1)),
        // No final newline, no empty line.
        case(&["-t"], "To: nobody@localhost\nSubject: no end", Some(1)),
        // Lists inside one argument.
        case(&["nobody@localhost, root@localhost"], "\n", Some(2)),
        case(&["nobody@localhost root@localhost"], "\n", None),
        // What is not modelled, and the old way to pick the deliverer.
        case(&["--sendmail", "/tmp/evil.sh", "-t"], "To: nobody@localhost\n\nx\n", None),
        case(&["-t", "-C", "/tmp/evil.cf"], "To: nobody@localhost\n\nx\n", None),
        case(&["-bs"], "MAIL FROM:<a@x>\r\nRCPT TO:<v@victim.example>\r\n", None),
        case(&["-t", "-O", "QueueDirectory=/tmp"], "To: nobody@localhost\n\nx\n", None),
        // The null sender.
        case(&["-f", "", "-t"], "To: nobody@localhost\n\nnull sender\n", Some(1)),
    ];
    let mut env = case(&["-t"], "To: nobody@localhost\n\nenv\n", Some(1));
    env.env = vec![
        ("OVERLIMIT_SENDMAIL", "/bin/true"),
        ("RELAYLIMITS", "/dev/null"),
        ("OVERLIMITDIR", "/tmp"),
        ("MAIL_CONFIG", "/tmp"),
        ("OVERLIMIT_MONITOR", "1"),
    ];
    v.push(env);
    // 10,000 recipients in one field.
    let many: Vec<String> = (0..10_000)
        .map(|i| format!("u{i}@victim.example"))
        .collect();
    v.push(case(
        &["-t", "-i"],
        &format!("To: {}\n\nmany\n", many.join(",\n ")),
        Some(10_000),
    ));
    v
}

#[test]
fn every_recipient_postfix_queues_from_the_hostile_corpus_was_counted() {
    let Some((pf, j)) = setup("*@localhost:100000\n") else {
        return;
    };
    let (mut expected, mut messages) = (0, 0);
    for c in corpus() {
        let mut cmd = j.as_user("site1", &[]);
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        cmd.arg(format!("{QMAILDIR}/bin/sendmail-overlimit"))
            .args(&c.args);
        let d = j.feed(cmd, &c.message);
        match c.reaches {
            Some(n) => {
                assert_eq!((d.code, d.stderr.as_str()), (Some(0), ""), "{:?}", c.args);
                expected += n;
                messages += 1;
            }
            None => assert_eq!(d.code, Some(100), "{:?}: {d:?}", c.args),
        }
    }
    let queued = pf.settle(uid("overlimit"), messages);
    let counted = j.total("site1@localhost").unwrap();
    let total: u64 = queued.iter().sum();
    assert_eq!(
        (queued.len(), total, counted),
        (messages, expected, expected),
        "{queued:?}"
    );
    let nobody = pf.mailbox("nobody");
    assert!(
        nobody.contains("token-bcc") && !nobody.contains("Bcc:"),
        "{nobody}"
    );
    assert!(nobody.contains(&format!(
        "X-Overlimit-Client: site1@localhost (uid {})",
        uid("site1")
    )));
    let null = format!(" uid={} from=<>", uid("overlimit"));
    assert!(
        pf.maillog()
            .lines()
            .any(|l| l.contains("postfix/pickup") && l.contains(&null)),
        "the null sender was not kept"
    );
}

#[test]
fn a_site_cannot_bypass_the_wrapper_through_postfixs_own_programs() {
    let Some((pf, j)) = setup("*@localhost:1\n") else {
        return;
    };
    for program in [
        vec!["/usr/sbin/sendmail", "-i", "nobody@localhost"],
        vec!["/usr/sbin/sendmail", "-t"],
        vec!["/usr/sbin/postdrop"],
    ] {
        let mut c = j.as_user("site1", &[]);
        c.args(&program);
        let d = j.feed(c, b"To: nobody@localhost\n\nbypass\n");
        assert_ne!(d.code, Some(0), "{program:?}: {d:?}");
        assert!(
            d.stderr.contains("not allowed to submit"),
            "{program:?}: {d:?}"
        );
    }
    // The wrapper goes through, to its limit, and stops there.
    assert_eq!(
        j.sendmail("site1", &["nobody@localhost"], b"\ncounted\n")
            .code,
        Some(0)
    );
    assert_eq!(
        j.sendmail("site1", &["nobody@localhost"], b"\nover\n").code,
        Some(111)
    );
    assert_eq!(pf.settle(uid("overlimit"), 1), [1]);
    assert_eq!(pf.delivered("nobody"), 1);
    assert!(!pf.mailbox("nobody").contains("bypass"));
    assert!(pf.queued_by(uid("site1")).is_empty());
}

#[test]
fn a_site_and_an_smtp_user_sharing_one_name_stop_at_one_limit() {
    let Some((pf, j)) = setup("info@example.com:4\n") else {
        return;
    };
    j.control("overlimit-senders", "site1:info@example.com\n");
    let smtp = || {
        Command::new(PLUGIN)
            .env_clear()
            .env(
                "RELAYLIMITS",
                j.path(&format!("{QMAILDIR}/control/relaylimits")),
            )
            .env("OVERLIMITDIR", j.path(&format!("{QMAILDIR}/overlimit")))
            .env("RELAYCLIENT", "")
            .env("SMTPAUTHUSER", "info@example.com")
            .env("RECIPIENT", "someone@remote.example")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    assert_eq!((smtp(), smtp()), (Some(112), Some(112)));
    let d = j.sendmail(
        "site1",
        &["-t", "-i"],
        b"To: nobody@localhost, root@localhost\n\nshared\n",
    );
    assert_eq!((d.code, d.stderr.as_str()), (Some(0), ""), "{d:?}");
    assert_eq!(smtp(), Some(113));
    let d = j.sendmail("site1", &["nobody@localhost"], b"\nlate\n");
    assert_eq!(d.code, Some(111), "{d:?}");
    // Shared with an SMTP user: the site is not told its count.
    assert!(
        d.stderr
            .contains("refused info@example.com: shared limit reached"),
        "{d:?}"
    );
    assert_eq!(pf.settle(uid("overlimit"), 1), [2]);
    assert!(pf.mailbox("nobody").contains("shared") && !pf.mailbox("nobody").contains("late"));
}

#[test]
fn a_sites_forward_file_cannot_fan_out_one_counted_message() {
    let Some((pf, j)) = setup("*@localhost:100\n") else {
        return;
    };
    // A site with a home, as on a server, and a .forward of its own that
    // would resend every message it receives to other recipients, uncounted.
    let home = format!("{QMAILDIR}/home-site1");
    let passwd = std::fs::read_to_string(j.scratch.join("passwd")).unwrap();
    let site1 = format!("site1:x:{0}:{0}::", uid("site1"));
    let passwd = passwd.replace(&format!("{site1}/nonexistent:"), &format!("{site1}{home}:"));
    std::fs::write(j.scratch.join("passwd"), passwd).unwrap();
    let out = j.root(&format!("install -d -o site1 -g site1 -m 755 {home}"));
    assert!(out.status.success(), "{}", jail::text(&out));
    let mut c = j.as_user("site1", &[]);
    c.args([
        "sh",
        "-c",
        &format!("printf 'nobody@localhost, site2@localhost\\n' > {home}/.forward"),
    ]);
    assert_eq!(j.feed(c, b"").code, Some(0));
    let d = j.sendmail("site1", &["site1@localhost"], b"Subject: fan\n\nfan out\n");
    assert_eq!((d.code, d.stderr.as_str()), (Some(0), ""), "{d:?}");
    assert_eq!(pf.settle(uid("overlimit"), 1), [1]);
    let delivered: usize = ["site1", "site2", "nobody"]
        .iter()
        .map(|u| pf.delivered(u))
        .sum();
    assert_eq!(
        (delivered, j.total("site1@localhost")),
        (1, Some(1)),
        "maillog:\n{}",
        pf.maillog()
    );
}

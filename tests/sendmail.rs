//! sendmail-overlimit and overlimit-count as installed: in the jail of
//! tests/support/jail.rs (root, a private mount namespace, the real
//! `make install-files` with its modes), run as a site's account the way
//! PHP's `mail()` runs them, in front of a recording stand-in for
//! `QMAILDIR/bin/sendmail`. Every test checks the one invariant: what the
//! deliverer was handed is exactly what was counted.

mod common;
#[path = "support/jail.rs"]
mod jail;
#[path = "support/process.rs"]
mod process;

use common::{Run, Sandbox};
use jail::{uid, Jail, QMAILDIR};
use std::os::unix::fs::MetadataExt;

const SITE: &str = "site1";

fn php(to: &str, extra: &str) -> Vec<u8> {
    format!("To: {to}\r\n{extra}Subject: Hello\r\n\r\nBody line\r\n").into_bytes()
}

fn jail_with(limits: &str) -> Option<Jail> {
    let j = Jail::or_skip()?;
    j.control("relaylimits", limits);
    Some(j)
}

#[test]
fn php_mail_is_handed_on_as_the_recipients_that_were_counted() {
    let Some(j) = jail_with("*@localhost:10\n") else {
        return;
    };
    let d = j.sendmail(
        SITE,
        &["-t", "-i"],
        &php(
            "a@x.example, \"Doe, J\" <j@y.example>",
            "Cc: Team: c@z.example;\r\nBcc: hidden@w.example,\r\n more@w.example\r\n",
        ),
    );
    assert_eq!((d.code, d.stderr.as_str()), (Some(0), ""), "{d:?}");
    let all = j.deliveries();
    assert_eq!(all.len(), 1);
    let sent = &all[0];
    assert_eq!(
        sent.args,
        [
            "-i",
            "-f",
            "site1",
            "--",
            "a@x.example",
            "j@y.example",
            "c@z.example",
            "hidden@w.example",
            "more@w.example"
        ]
    );
    assert_eq!(j.total("site1@localhost"), Some(5));
    // Run as overlimit, the caller's ids gone; the caller's login for qmail-inject.
    assert_eq!(sent.uid, uid("overlimit").to_string());
    assert!(
        sent.env.contains("USER=site1\n") && sent.env.contains("LOGNAME=site1\n"),
        "{}",
        sent.env
    );
    let msg = String::from_utf8_lossy(&sent.message);
    assert!(
        msg.starts_with(&format!(
            "X-Overlimit-Client: site1@localhost (uid {})\r\nTo: a@x.example",
            uid(SITE)
        )),
        "{msg}"
    );
    assert!(!msg.contains("Bcc") && !msg.contains("more@"), "{msg}");
}

#[test]
fn the_envelope_sender_is_the_callers_or_the_login() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    for (args, sender) in [
        (&["a@x"][..], "site1"),
        (&["--sender", "bounce@x", "a@x"], "bounce@x"),
        (&["--sender", "bounce@x", "-f", "<me@x>", "a@x"], "me@x"),
        (&["-f", "<>", "a@x"], ""),
        (&["-r", "", "-F", "Web Site", "a@x"], ""),
    ] {
        assert_eq!(j.sendmail(SITE, args, b"\n").code, Some(0), "{args:?}");
        let last = j.deliveries().pop().unwrap();
        let f = last.args.iter().position(|a| a == "-f").unwrap();
        assert_eq!(last.args[f + 1], sender, "{args:?}: {:?}", last.args);
    }
    assert_eq!(
        j.sendmail(SITE, &["-f", "a b@x", "a@x"], b"\n").code,
        Some(100)
    );
}

#[test]
fn a_limit_refuses_the_whole_message_and_nothing_reaches_the_deliverer() {
    let Some(j) = jail_with("*@localhost:5\n") else {
        return;
    };
    let d = j.sendmail(SITE, &["-i", "a@x", "b@x", "c@x"], b"Subject: one\n\nx\n");
    assert_eq!(d.code, Some(0), "{d:?}");
    let d = j.sendmail(SITE, &["-i", "a@x", "b@x", "c@x"], b"Subject: two\n\nx\n");
    assert_eq!(d.code, Some(111), "{d:?}");
    assert!(
        d.stderr
            .contains("refused site1@localhost: limit 5 reached (3 counted, 3 asked"),
        "{d:?}"
    );
    let d = j.sendmail(SITE, &["a@x", "b@x", "c@x", "d@x", "e@x", "f@x"], b"\n");
    assert_eq!(d.code, Some(100), "{d:?}");
    assert!(
        d.stderr
            .contains("limit 5 is below the message's 6 recipients"),
        "{d:?}"
    );
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (3, Some(3))
    );
}

#[test]
fn the_issues_three_holes_are_closed() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    let refused = [
        // Headers read two ways: a backslash outside quotes, words without commas.
        (
            vec!["-t", "-i"],
            php(
                "x\\\", v1@victim.example, v2@victim.example, \"q\"(\")g:;",
                "",
            ),
        ),
        (
            vec!["-t", "-i"],
            php(
                "v1@victim.example v2@victim.example v3@victim.example [x] <a@x.example>",
                "",
            ),
        ),
        // Flags after the first recipient are recipients, and not addresses.
        (
            vec![
                "-t",
                "-i",
                "",
                "-f",
                "v1@victim.example",
                "-f",
                "v2@victim.example",
            ],
            php("a@x", ""),
        ),
        (vec!["-i", "a@x", "-f", "v1@victim.example"], php("a@x", "")),
        // The caller cannot pick the deliverer.
        (vec!["--sendmail", "/tmp/evil.sh", "-t"], php("a@x", "")),
        (vec!["-t", "-C", "/tmp/evil.cf"], php("a@x", "")),
        (vec!["-bs"], php("a@x", "")),
        (vec!["-t", "-oQ/tmp"], php("a@x", "")),
        // Lists in an argument that an MTA would split differently.
        (vec!["\"a@x, b@y\"@z"], php("a@x", "")),
        (vec!["-i", "--", "-oQ/tmp@x"], php("a@x", "")),
    ];
    for (args, msg) in &refused {
        let d = j.sendmail(SITE, args, msg);
        assert_eq!(d.code, Some(100), "{args:?}: {d:?}");
        assert!(d.stderr.contains("nothing sent"), "{args:?}: {d:?}");
    }
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (0, None)
    );
    // -Jf: qmail's sendmail ignores the cluster, so v1 is a recipient, counted.
    let d = j.sendmail(SITE, &["-Jf", "v1@victim.example"], &php("a@x", ""));
    assert_eq!(d.code, Some(0), "{d:?}");
    // An argument holding a list is split, each address counted.
    let d = j.sendmail(SITE, &["a@x, b@y", "c@z"], &php("a@x", ""));
    assert_eq!(d.code, Some(0), "{d:?}");
    assert_eq!(j.deliveries()[1].recipients(), ["a@x", "b@y", "c@z"]);
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (4, Some(4))
    );
}

#[test]
fn the_callers_environment_changes_no_path_and_no_deliverer() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    let evil = j.path("/tmp/evil-ran");
    let mut c = j.as_user(SITE, &[]);
    c.env("OVERLIMIT_SENDMAIL", "/bin/touch /tmp/evil-ran")
        .env("RELAYLIMITS", "/dev/null")
        .env("OVERLIMITDIR", "/tmp")
        .env("OVERLIMIT_MONITOR", "1")
        .env("OVERLIMIT_FAILCLOSED", "0")
        .env("LD_PRELOAD", "/tmp/x.so")
        .arg(format!("{QMAILDIR}/bin/sendmail-overlimit"))
        .args(["-t", "-i"]);
    let d = j.feed(c, &php("a@x", ""));
    assert_eq!(d.code, Some(0), "{d:?}");
    assert!(!evil.exists());
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (1, Some(1))
    );
    assert!(!j.deliveries()[0].env.contains("OVERLIMIT"));
}

#[test]
fn nothing_is_counted_when_nothing_was_sent() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    assert_eq!(j.sendmail(SITE, &["a@x"], b"\n").code, Some(0));
    // The deliverer fails: its code, and the recipients given back.
    std::fs::write(j.path(&format!("{QMAILDIR}/deliverer-exit")), "1\n").unwrap();
    let d = j.sendmail(SITE, &["a@x", "b@x"], b"\n");
    assert_eq!(d.code, Some(1), "{d:?}");
    assert!(d.stderr.contains("given back"), "{d:?}");
    // 75 would be success to PHP 8.5: 111 instead.
    std::fs::write(j.path(&format!("{QMAILDIR}/deliverer-exit")), "75\n").unwrap();
    assert_eq!(j.sendmail(SITE, &["a@x"], b"\n").code, Some(111));
    assert_eq!(j.total("site1@localhost"), Some(1));
    // A deliverer that cannot run: refused before anything is counted.
    std::fs::remove_file(j.path(&format!("{QMAILDIR}/deliverer-exit"))).unwrap();
    assert!(j
        .root(&format!("chmod 644 {QMAILDIR}/bin/sendmail"))
        .status
        .success());
    let d = j.sendmail(SITE, &["a@x"], b"\n");
    assert_eq!(d.code, Some(111), "{d:?}");
    assert!(d.stderr.contains("internal error, mail refused"), "{d:?}");
    assert_eq!(j.total("site1@localhost"), Some(1));
}

#[test]
fn the_deliverer_comes_from_a_root_owned_control_file() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    let other = format!("{QMAILDIR}/bin/other-sendmail");
    assert!(j
        .root(&format!("cp {QMAILDIR}/bin/sendmail {other}"))
        .status
        .success());
    j.control("overlimit-sendmail", &format!("{other}\n"));
    assert_eq!(j.sendmail(SITE, &["a@x"], b"\n").code, Some(0));
    assert_eq!(j.delivered_recipients(), 1);
    // Writable by others: not trusted, and no fallback to the built-in.
    let ctl = format!("{QMAILDIR}/control/overlimit-sendmail");
    assert!(j.root(&format!("chmod 666 {ctl}")).status.success());
    let d = j.sendmail(SITE, &["a@x"], b"\n");
    assert_eq!(d.code, Some(111), "{d:?}");
    assert!(d.stderr.contains("not trusted"), "{d:?}");
    assert!(j
        .root(&format!("chmod 644 {ctl}; chown {} {ctl}", uid(SITE)))
        .status
        .success());
    assert_eq!(j.sendmail(SITE, &["a@x"], b"\n").code, Some(111));
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (1, Some(1))
    );
}

#[test]
fn refusals_hide_the_numbers_of_shared_counters() {
    let Some(j) = jail_with("*@localhost:10\n@localhost:4\nshop@example.com:2\n") else {
        return;
    };
    assert_eq!(
        j.sendmail("site2", &["a@x", "b@x", "c@x"], b"\n").code,
        Some(0)
    );
    let d = j.sendmail(SITE, &["a@x", "b@x"], b"\n");
    assert_eq!(d.code, Some(111), "{d:?}");
    assert!(
        d.stderr.contains("@localhost shared limit reached"),
        "{d:?}"
    );
    assert!(
        !d.stderr.contains("3 counted") && !d.stderr.contains(":4") && !d.stderr.contains(" 4"),
        "{d:?}"
    );
    // A mapped name may be shared with an SMTP user: hidden too.
    j.control("overlimit-senders", "site1:shop@example.com\nsite2:*\n");
    assert_eq!(j.sendmail(SITE, &["a@x"], b"\n").code, Some(0));
    let d = j.sendmail(SITE, &["a@x", "b@x"], b"\n");
    assert_eq!(d.code, Some(111), "{d:?}");
    assert!(
        d.stderr
            .contains("refused shop@example.com: shared limit reached"),
        "{d:?}"
    );
    // LOGIN:* allows no name (it could make counters without bound).
    let d = j.sendmail("site2", &["--client", "anything@example.org", "a@x"], b"\n");
    assert_eq!(d.code, Some(100), "{d:?}");
    assert!(
        d.stderr.contains("site2:*") && d.stderr.contains("may not send as"),
        "{d:?}"
    );
    assert_eq!(j.total("anything@example.org"), None);
    assert_eq!(j.total("shop@example.com"), Some(1));
}

#[test]
fn overlimit_count_reads_only_its_strict_argument_lists() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    let count = format!("{QMAILDIR}/bin/overlimit-count");
    for args in [
        &["--submit", "-f", "s", "--", "a b@x"][..],
        &["--submit", "-f", "s", "a@x"],
        &["--submit", "-t", "-f", "s", "--", "a@x"],
        &["--submit", "-f", "s", "--"],
        &["--submit", "-f", "-x", "--", "a@x"],
        &["--submit", "-f", "s", "-F", "a\nb", "--", "a@x"],
        &["--queue", "0"],
        &["--queue", "1", "x"],
        &["3"],
    ] {
        let mut c = j.as_user(SITE, &[]);
        c.arg(&count).args(args);
        let d = j.feed(c, b"\n");
        assert_eq!(d.code, Some(100), "{args:?}: {d:?}");
        assert!(d.stderr.contains("usage:"), "{args:?}: {d:?}");
    }
    let mut c = j.as_user(SITE, &[]);
    c.arg(&count).args(["--queue", "3"]);
    let d = j.feed(c, b"");
    assert_eq!(
        (d.code, d.stdout.as_str()),
        (Some(0), "site1@localhost\n"),
        "{d:?}"
    );
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (0, Some(3))
    );
}

#[test]
fn make_install_sets_every_mode_and_is_idempotent() {
    let Some(j) = Jail::or_skip() else { return };
    let modes = || {
        let out = j.root(&format!(
            "cd {QMAILDIR} && stat -c '%n %U:%G %a' overlimit bin/overlimit-count \
             bin/qmail-queue-overlimit bin/sendmail-overlimit control/overlimit-uncounted"
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let want = "overlimit overlimit:overlimit 2770
bin/overlimit-count overlimit:overlimit 6755
bin/qmail-queue-overlimit root:overlimit 2711
bin/sendmail-overlimit root:root 755
control/overlimit-uncounted root:root 644
";
    assert_eq!(modes(), want);
    let build = std::path::Path::new(jail::COUNT)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let again = j.root(&format!(
        "make -s -C {} install-files BUILD={build} QMAILDIR={QMAILDIR}",
        env!("CARGO_MANIFEST_DIR")
    ));
    assert!(again.status.success(), "{}", jail::text(&again));
    assert_eq!(modes(), want);
    let uncounted =
        std::fs::read_to_string(j.path(&format!("{QMAILDIR}/control/overlimit-uncounted")))
            .unwrap();
    assert_eq!(uncounted, "qmaild\nqmailq\n");
}

/// Holds the exclusive lock of a counter in the jail, as a sweep would.
fn hold_lock(j: &Jail, counter: &str) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(j.path(&format!("{QMAILDIR}/overlimit/{counter}"))).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    f
}

#[test]
fn a_site_cannot_signal_trace_or_limit_the_counter_while_it_holds_a_lock() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    assert_eq!(j.sendmail(SITE, &["a@x"], b"\n").code, Some(0));
    let before = j.counter("site1@localhost").unwrap();
    let lock = hold_lock(&j, "site1@localhost");
    // The site starts its own mail, waits until overlimit-count has become
    // overlimit wholly (real, effective, saved and filesystem uid: between
    // the set-uid exec and the drop, the real uid is still the site's, and
    // the kernel still lets the site signal it), then attacks it while it
    // waits for the lock.
    let script = format!(
        "{QMAILDIR}/bin/sendmail-overlimit -i a@x </dev/null 2>/dev/null & p=$!
o={overlimit}
until grep -Eq \"^Uid:[[:space:]]+$o[[:space:]]+$o[[:space:]]+$o[[:space:]]+$o\"'$' /proc/$p/status 2>/dev/null; do sleep 0.01; done
kill -STOP $p 2>/dev/null; echo stop=$?
kill -KILL $p 2>/dev/null; echo kill=$?
kill -TERM $p 2>/dev/null; echo term=$?
prlimit --pid $p --fsize=0:0 2>/dev/null; echo prlimit=$?
strace -o /dev/null -p $p 2>/dev/null; echo strace=$?
cat /proc/$p/environ >/dev/null 2>&1; echo environ=$?
wait $p; echo exit=$?",
        overlimit = uid("overlimit")
    );
    let mut c = j.as_user(SITE, &[]);
    c.args(["sh", "-c", &script]);
    let d = j.feed(c, b"");
    drop(lock);
    assert_eq!(
        d.stdout, "stop=1\nkill=1\nterm=1\nprlimit=1\nstrace=1\nenviron=1\nexit=111\n",
        "{d:?}"
    );
    // The lock deadline passed: refused, the counter as it was, nothing sent.
    assert_eq!(j.counter("site1@localhost").unwrap(), before);
    assert_eq!(j.delivered_recipients(), 1);
    assert_eq!(j.sendmail(SITE, &["a@x"], b"\n").code, Some(0));
    assert_eq!(j.total("site1@localhost"), Some(2));
}

#[test]
fn a_site_cannot_start_the_counter_with_limits_that_would_tear_a_write() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    for (limit, named) in [
        ("--fsize=4096:4096", "RLIMIT_FSIZE"),
        ("--nofile=16:16", "RLIMIT_NOFILE"),
        ("--cpu=2:2", "RLIMIT_CPU"),
        ("--as=300000000:300000000", "RLIMIT_AS"),
        ("--stack=65536:65536", "RLIMIT_STACK"),
    ] {
        let mut c = j.as_user(SITE, &[]);
        c.args([
            "prlimit",
            limit,
            &format!("{QMAILDIR}/bin/sendmail-overlimit"),
            "a@x",
        ]);
        let d = j.feed(c, b"Subject: s\n\nx\n");
        assert_eq!(d.code, Some(111), "{limit}: {d:?}");
        assert!(
            d.stderr.contains(named) && d.stderr.contains("mail refused"),
            "{limit}: {d:?}"
        );
    }
    // Soft limits alone are raised back to the hard ones.
    let mut c = j.as_user(SITE, &[]);
    c.args([
        "prlimit",
        "--fsize=1:",
        "--nofile=4:",
        &format!("{QMAILDIR}/bin/sendmail-overlimit"),
        "a@x",
    ]);
    let d = j.feed(c, b"Subject: s\n\nx\n");
    assert_eq!(d.code, Some(0), "{d:?}");
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (1, Some(1))
    );
}

#[test]
fn without_its_privilege_in_effect_the_counter_refuses_naming_the_fix() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    let bin = format!("{QMAILDIR}/bin");
    let refused = |d: &process::Finished, how: &str| {
        assert_eq!(d.code, Some(111), "{how}: {d:?}");
        assert!(
            d.stderr.contains("set-user-id") && d.stderr.contains("run make install as root"),
            "{how}: {d:?}"
        );
    };
    // no_new_privs, as a container or systemd's NoNewPrivileges sets it.
    let d = j.feed(
        {
            let mut c = j.as_user(SITE, &["--no-new-privs"]);
            c.args([&format!("{bin}/sendmail-overlimit"), "a@x"]);
            c
        },
        b"\n",
    );
    refused(&d, "no_new_privs");
    // Traced: the kernel runs a set-id program without its ids.
    let mut c = j.as_user(SITE, &[]);
    c.args([
        "strace",
        "-f",
        "-o",
        "/dev/null",
        &format!("{bin}/sendmail-overlimit"),
        "a@x",
    ]);
    refused(&j.feed(c, b"\n"), "strace");
    // A nosuid mount of the bin directory.
    assert!(j
        .root(&format!(
            "mount --bind {bin} {bin} && mount -o remount,bind,nosuid {bin}"
        ))
        .status
        .success());
    refused(&j.sendmail(SITE, &["a@x"], b"\n"), "nosuid");
    assert!(j.root(&format!("umount {bin}")).status.success());
    // Installed without the bits (chmod, or a copy by a packager).
    assert!(j
        .root(&format!("chmod 755 {bin}/overlimit-count"))
        .status
        .success());
    refused(&j.sendmail(SITE, &["a@x"], b"\n"), "no set-id bits");
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (0, None)
    );
}

/// What the installed `overlimit check` reports about the local-mail
/// install: its `local mail:` lines, one finding each.
fn install_findings(j: &Jail) -> String {
    let out = j
        .command()
        .arg(format!("{QMAILDIR}/bin/overlimit"))
        .arg("check")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("overlimit: local mail: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_install_check_names_what_is_broken() {
    let Some(j) = Jail::or_skip() else { return };
    let findings = || install_findings(&j);
    assert_eq!(findings(), "");
    let bin = format!("{QMAILDIR}/bin");
    assert!(j
        .root(&format!(
            "chmod 755 {bin}/overlimit-count; chmod 777 {QMAILDIR}/overlimit"
        ))
        .status
        .success());
    assert!(j
        .root(&format!(
            "mount --bind {bin} {bin} && mount -o remount,bind,nosuid {bin}"
        ))
        .status
        .success());
    j.control("overlimit-sendmail", "relative/path\n");
    let f = findings();
    assert_eq!(f.lines().count(), 4, "{f}");
    assert!(
        f.contains("overlimit-count: owner") && f.contains("mode 755, should be"),
        "{f}"
    );
    assert!(
        f.contains("mode 2777") && f.contains("nosuid") && f.contains("absolute path"),
        "{f}"
    );
}

#[test]
fn counters_the_plugin_creates_are_group_writable_whatever_its_umask() {
    // overlimit-count and the plug-in share counters through group overlimit.
    let s = Sandbox::with_limits(":100\n");
    let plugin = Run::new("/bin/sh")
        .args(&["-c", "umask 077; exec \"$0\"", common::PLUGIN])
        .env("RELAYLIMITS", s.control())
        .env("OVERLIMITDIR", s.dir())
        .env("RELAYCLIENT", "")
        .env("TCPREMOTEIP", "192.0.2.7");
    assert_eq!(plugin.code(), 112);
    let mode = std::fs::metadata(s.dir().join("192.0.2.7")).unwrap().mode();
    assert_eq!(mode & 0o770, 0o660, "mode {mode:o}");
}

#[test]
fn the_example_senders_file_means_what_its_comments_say() {
    use overlimit::local::senders::for_login;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("control-examples/overlimit-senders");
    let mut notes = Vec::new();
    let web1 = for_login(&path, b"web1", &mut notes).unwrap();
    assert_eq!(web1.default_name(b"web1"), b"info@example.com");
    assert!(web1.allows(b"web1", b"newsletter@example.com"));
    assert!(!web1.allows(b"web1", b"web1@localhost"));
    let www = for_login(&path, b"www-data", &mut notes).unwrap();
    assert_eq!(www.default_name(b"www-data"), b"www-data@localhost");
    assert!(www.allows(b"www-data", b"www.example.org@localhost"));
    assert!(!www.allows(b"www-data", b"info@example.com"));
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn timers_and_pending_signals_a_site_leaves_behind_do_not_reach_the_counter() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    // alarm(1) armed before the exec, and a blocked SIGTERM left pending;
    // the message arrives after the alarm would have fired.
    let script = format!(
        "(sleep 1.5; printf 'Subject: late\\n\\nx\\n') | perl -MPOSIX -e '
            sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGTERM, SIGUSR1));
            kill TERM => $$; kill USR1 => $$; alarm 1; exec @ARGV or exit 99' \
         {QMAILDIR}/bin/overlimit-count --submit -f site1 -- a@x; echo exit=$?"
    );
    let mut c = j.as_user(SITE, &[]);
    c.args(["sh", "-c", &script]);
    let d = j.feed(c, b"");
    assert_eq!(d.stdout, "exit=0\n", "{d:?}");
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (1, Some(1))
    );
}

/// A cgroup v2 directory made for one test and removed after it.
struct TestCgroup(std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Empty by now: the one process put in it has exited.
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Where cgroup v2 is mounted on the host, if anywhere writable.
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        (right.starts_with("cgroup2 ") && f.get(3) == Some(&"/")).then(|| f[4].into())
    })
}

#[test]
fn a_site_that_controls_the_counters_cgroup_is_refused() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    let Some(top) = cgroup2_mount() else {
        common::skip("no cgroup v2 mount");
        return;
    };
    let dir = top.join(format!("overlimit-test-{}", std::process::id()));
    if std::fs::create_dir(&dir).is_err() {
        common::skip(&format!("cannot create {}", dir.display()));
        return;
    }
    let cg = TestCgroup(dir);
    let site = uid(SITE);
    // Delegated as systemd delegates a user's cgroup: the directory and its
    // control files owned by the site. Root moves itself in, then becomes
    // the site and runs the wrapper.
    let d = cg.0.display();
    let script = format!(
        "chown -R {site}:{site} {d} && echo $$ > {d}/cgroup.procs && exec setpriv --reuid={site} \
         --regid={site} --clear-groups -- {QMAILDIR}/bin/sendmail-overlimit a@x"
    );
    let mut c = j.command();
    c.args(["sh", "-c", &script]);
    let out = j.feed(c, b"\n");
    assert_eq!(out.code, Some(111), "{out:?}");
    assert!(
        out.stderr.contains("runs in a cgroup the caller controls"),
        "{out:?}"
    );
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (0, None)
    );
}

/// A deliverer that behaves as Postfix's postdrop does once it has queued
/// the message: it catches SIGINT, whatever it inherited, and exits with
/// the signal's number, so that its caller reports failure. It says where it
/// is, then waits.
const QUEUES_THEN_CATCHES_INT: &str = "#!/usr/bin/perl
$SIG{INT} = sub { exit 2 };
open(my $f, '>', '/var/qmail/deliveries/queued') or die;
close $f;
select(undef, undef, undef, 1);
exit 0;
";

#[test]
fn the_sites_terminal_cannot_interrupt_the_deliverer_after_it_queued() {
    use std::io::Write;
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    let deliverer = format!("{QMAILDIR}/bin/queues-then-catches-int");
    let p = j.path(&deliverer);
    std::fs::write(&p, QUEUES_THEN_CATCHES_INT).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    j.control("overlimit-sendmail", &format!("{deliverer}\n"));
    // The site runs the wrapper on a terminal of its own (script's pty, its
    // controlling terminal) and types ^C once the message is queued: the
    // terminal signals its foreground process group, whatever the uids. Its
    // own shell ignores the ^C, to report how the wrapper ended.
    let mut c = j.as_user(SITE, &[]);
    c.args([
        "script",
        "-qec",
        &format!(
            "trap '' INT; printf '\\n' | {QMAILDIR}/bin/sendmail-overlimit -i a@x; echo exit=$?"
        ),
        "/dev/null",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut keyboard = child.stdin.take().unwrap();
    let queued = j.path(&format!("{QMAILDIR}/deliveries/queued"));
    let started = std::time::Instant::now();
    while !queued.exists() {
        assert!(started.elapsed() < process::HANG, "the deliverer never ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    keyboard.write_all(b"\x03").unwrap();
    keyboard.flush().unwrap();
    let d = process::finish(child, std::time::Instant::now());
    drop(keyboard);
    assert!(d.stdout.contains("exit=0"), "{d:?}");
    // Queued, so counted: no refund.
    assert_eq!(j.total("site1@localhost"), Some(1), "{d:?}");
}

#[test]
fn the_sites_descriptors_do_not_reach_the_counter_or_the_deliverer() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    // A site hands over descriptors of its own: one open file, and enough
    // more that the counter would start with almost none free.
    let script = format!(
        "exec 7</etc/hostname; i=20; while [ $i -lt 1000 ]; do eval \"exec $i</dev/null\"; i=$((i+1)); done
exec prlimit --nofile=1024:1024 {QMAILDIR}/bin/sendmail-overlimit -i a@x"
    );
    let mut c = j.as_user(SITE, &[]);
    c.args(["bash", "-c", &script]);
    let d = j.feed(c, b"Subject: fds\n\nx\n");
    assert_eq!(d.code, Some(0), "{d:?}");
    let fds = &j.deliveries()[0].fds;
    let leaked: Vec<&i32> = fds
        .iter()
        .filter(|&&fd| fd == 7 || (20..1000).contains(&fd))
        .collect();
    assert_eq!(
        leaked.len(),
        0,
        "the site's descriptors reached the deliverer"
    );
    assert_eq!(j.total("site1@localhost"), Some(1));
}

#[test]
fn the_overlimit_accounts_home_is_not_the_counter_directory() {
    let Some(j) = Jail::or_skip() else { return };
    // A home that exists and is the account's makes overlimit a local user
    // to qmail: mail to it (from anyone, over SMTP too) is delivered as
    // overlimit into that directory, its .qmail files obeyed as overlimit,
    // whose queued mail passes the front uncounted.
    let passwd = std::fs::read_to_string(j.scratch.join("passwd")).unwrap();
    let line = format!("overlimit:x:{0}:{0}::", uid("overlimit"));
    let passwd = passwd.replace(
        &format!("{line}/nonexistent:"),
        &format!("{line}{QMAILDIR}/overlimit:"),
    );
    std::fs::write(j.scratch.join("passwd"), passwd).unwrap();
    let f = install_findings(&j);
    assert!(
        f.contains("home") && f.contains(&format!("{QMAILDIR}/overlimit")),
        "{f}"
    );
    // And make install (and the package, by the same script) creates the
    // account with no home.
    let setup = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/setup.sh"))
        .unwrap();
    assert!(
        setup.contains("--home-dir /nonexistent") && !setup.contains("--home-dir \"$home"),
        "packaging/setup.sh gives overlimit a home"
    );
}

#[test]
fn a_site_that_ignores_sigchld_cannot_make_a_sent_message_look_failed() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    // SIGCHLD ignored survives exec; children would then be reaped unseen,
    // and waiting for the deliverer fail after it sent the mail.
    let mut c = j.as_user(SITE, &[]);
    c.args([
        "perl",
        "-e",
        "$SIG{CHLD} = 'IGNORE'; exec @ARGV or die",
        &format!("{QMAILDIR}/bin/sendmail-overlimit"),
        "-i",
        "a@x",
    ]);
    let d = j.feed(c, b"Subject: s\n\nx\n");
    assert_eq!((d.code, d.stderr.as_str()), (Some(0), ""), "{d:?}");
    assert_eq!(
        (j.delivered_recipients(), j.total("site1@localhost")),
        (1, Some(1))
    );
}

#[test]
fn a_deliverer_killed_after_it_queued_gets_nothing_given_back() {
    let Some(j) = jail_with("*@localhost:100\n") else {
        return;
    };
    // Killed by the kernel (an OOM kill the site provoked in its cgroup, a
    // CPU limit) once the message is queued: the end cannot tell whether it
    // was sent, so the count stays.
    let deliverer = format!("{QMAILDIR}/bin/queues-then-dies");
    let p = j.path(&deliverer);
    std::fs::write(
        &p,
        format!("#!/bin/sh\ncat >/dev/null\ntouch {QMAILDIR}/deliveries/queued\nkill -KILL $$\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    j.control("overlimit-sendmail", &format!("{deliverer}\n"));
    let d = j.sendmail(SITE, &["-i", "a@x"], b"Subject: s\n\nx\n");
    assert_eq!(d.code, Some(111), "{d:?}");
    assert!(
        d.stderr.contains("counted (it may have been sent)"),
        "{d:?}"
    );
    assert!(j.path(&format!("{QMAILDIR}/deliveries/queued")).exists());
    assert_eq!(j.total("site1@localhost"), Some(1), "{d:?}");
}

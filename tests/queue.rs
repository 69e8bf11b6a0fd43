//! qmail-queue-overlimit, swapped in for `bin/qmail-queue` by the real
//! `make queue-front-on`, in front of a stand-in that follows qmail-queue(8)
//! (examples/qmail-queue-standin.rs, installed setuid qmailq as the real one
//! is), inside the jail of tests/support/jail.rs. A site's account queues
//! mail the way qmail-inject does: the message on fd 0, then the envelope on
//! fd 1.

mod common;
#[path = "support/jail.rs"]
mod jail;
#[path = "support/process.rs"]
mod process;

use jail::{uid, Jail, QMAILDIR};
use process::Finished;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

const SITE: &str = "site1";

fn front() -> Option<Jail> {
    let j = Jail::or_skip()?;
    j.control("relaylimits", "*@localhost:5\n");
    let out = j.root(&format!(
        "make -s -C {} queue-front-on QMAILDIR={QMAILDIR}",
        env!("CARGO_MANIFEST_DIR")
    ));
    assert!(out.status.success(), "queue-front-on: {}", jail::text(&out));
    Some(j)
}

fn envelope(sender: &str, rcpts: &[&str]) -> Vec<u8> {
    let mut e = format!("F{sender}\0").into_bytes();
    for r in rcpts {
        e.extend_from_slice(format!("T{r}\0").as_bytes());
    }
    e.push(0);
    e
}

/// Runs `bin/qmail-queue` as `login` with extra setpriv options, fed as
/// `feed_queue` feeds it.
fn queue(j: &Jail, login: &str, extra: &[&str], message: &[u8], env: &[u8]) -> Finished {
    let mut c = j.as_user(login, extra);
    c.arg(format!("{QMAILDIR}/bin/qmail-queue"));
    feed_queue(c, message, env)
}

/// Runs `c` (a qmail-queue): the message written on its fd 0 first, then
/// the envelope on its fd 1, both pipes (a front that read fd 1 first would
/// deadlock against this writer).
fn feed_queue(mut c: Command, message: &[u8], env: &[u8]) -> Finished {
    let (env_read, mut env_write) = std::io::pipe().unwrap();
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::from(env_read))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(c);
    let mut stdin = child.stdin.take().unwrap();
    let (message, env) = (message.to_vec(), env.to_vec());
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&message);
        drop(stdin);
        let _ = env_write.write_all(&env);
    });
    let done = process::finish(child, Instant::now());
    let _ = writer.join();
    done
}

/// What the stand-in queued: (message, envelope, "ruid euid") per call.
fn queued(j: &Jail) -> Vec<(Vec<u8>, Vec<u8>, String)> {
    let dir = j.path(&format!("{QMAILDIR}/standin"));
    let mut pids: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix("uid-").map(str::to_string)
        })
        .collect();
    pids.sort();
    pids.iter()
        .map(|p| {
            let read = |k: &str| std::fs::read(dir.join(format!("{k}-{p}"))).unwrap();
            (
                read("message"),
                read("envelope"),
                String::from_utf8(read("uid")).unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_front_counts_and_hands_on_the_same_message_envelope_and_real_uid() {
    let Some(j) = front() else { return };
    // A large message: read wholly before the envelope.
    let mut msg = b"Subject: big\n\n".to_vec();
    msg.extend(std::iter::repeat_n(b'x', 4 << 20));
    let env = envelope("site1@example.com", &["a@x", "b@y"]);
    let d = queue(&j, SITE, &[], &msg, &env);
    assert_eq!((d.code, d.stderr.as_str()), (Some(0), ""), "{d:?}");
    let q = queued(&j);
    assert_eq!(q.len(), 1);
    assert!(q[0].0 == msg, "the message changed");
    assert_eq!(q[0].1, env);
    assert_eq!(q[0].2, format!("{} {}", uid(SITE), uid("qmailq")));
    assert_eq!(j.total("site1@localhost"), Some(2));
}

#[test]
fn over_a_limit_nothing_is_queued_71_for_now_31_for_good() {
    let Some(j) = front() else { return };
    let msg = b"Subject: s\n\nx\n";
    assert_eq!(
        queue(&j, SITE, &[], msg, &envelope("s", &["a@x", "b@x", "c@x"])).code,
        Some(0)
    );
    let d = queue(&j, SITE, &[], msg, &envelope("s", &["a@x", "b@x", "c@x"]));
    assert_eq!(d.code, Some(71), "{d:?}");
    assert!(
        d.stderr
            .contains("refused site1@localhost: limit 5 reached"),
        "{d:?}"
    );
    let six = ["a@x", "b@x", "c@x", "d@x", "e@x", "f@x"];
    assert_eq!(
        queue(&j, "site2", &[], msg, &envelope("s", &six)).code,
        Some(31)
    );
    assert_eq!(queued(&j).len(), 1);
    assert_eq!(
        (j.total("site1@localhost"), j.total("site2@localhost")),
        (Some(3), Some(0))
    );
}

#[test]
fn a_bad_or_short_envelope_queues_nothing_with_qmail_queues_codes() {
    let Some(j) = front() else { return };
    let msg = b"Subject: s\n\nx\n";
    for (env, code) in [
        (&b"Fs\0Ta@x\0"[..], 54),
        (b"Fs\0Ta@x", 54),
        (b"", 54),
        (b"Xs\0Ta@x\0\0", 91),
        (b"Fs\0Fa@x\0\0", 91),
    ] {
        let d = queue(&j, SITE, &[], msg, env);
        assert_eq!(d.code, Some(code), "{env:?}: {d:?}");
    }
    assert!(queued(&j).is_empty());
    assert_eq!(j.total("site1@localhost"), None);
}

#[test]
fn daemons_and_the_overlimit_account_pass_uncounted() {
    let Some(j) = front() else { return };
    let msg = b"Subject: s\n\nx\n";
    let env = envelope("s", &["a@x", "b@x", "c@x", "d@x", "e@x", "f@x"]);
    assert_eq!(queue(&j, "qmaild", &[], msg, &env).code, Some(0));
    assert_eq!(queue(&j, "overlimit", &[], msg, &env).code, Some(0));
    assert_eq!(queued(&j).len(), 2);
    assert_eq!(j.counter("qmaild@localhost"), None);
    // The list is the administrator's: a file anyone may write is refused.
    assert!(j
        .root(&format!("chmod 666 {QMAILDIR}/control/overlimit-uncounted"))
        .status
        .success());
    let d = queue(&j, "qmaild", &[], msg, &env);
    assert_eq!(d.code, Some(71), "{d:?}");
    assert!(d.stderr.contains("not trusted"), "{d:?}");
}

#[test]
fn the_wrapper_and_the_front_count_a_recipient_once() {
    let Some(j) = front() else { return };
    // A deliverer that queues as qmail-inject does: through bin/qmail-queue.
    let out = j.root(&format!(
        "cat > {QMAILDIR}/bin/sendmail <<'EOF'
#!/bin/sh
shift 3
env=$(mktemp) ; msg=$(mktemp)
cat > $msg
{{ printf 'Fsite\\0'; for r in \"$@\"; do printf 'T%s\\0' \"$r\"; done; printf '\\0'; }} > $env
{QMAILDIR}/bin/qmail-queue < $msg 1< $env; c=$?
rm -f $env $msg; exit $c
EOF"
    ));
    assert!(out.status.success(), "{}", jail::text(&out));
    let d = j.sendmail(SITE, &["a@x", "b@x"], b"Subject: once\n\nx\n");
    assert_eq!((d.code, d.stderr.as_str()), (Some(0), ""), "{d:?}");
    let q = queued(&j);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].1, envelope("site", &["a@x", "b@x"]));
    assert_eq!(j.total("site1@localhost"), Some(2));
}

#[test]
fn a_front_without_its_privilege_or_its_original_refuses() {
    let Some(j) = front() else { return };
    let msg = b"Subject: s\n\nx\n";
    let env = envelope("s", &["a@x"]);
    // The original cannot be bypassed: only group overlimit may run it.
    let d = queue(&j, SITE, &[], msg, &env);
    assert_eq!(d.code, Some(0));
    // (Through sh: setpriv itself execs with root's capabilities still in effect.)
    let mut c = j.as_user(SITE, &[]);
    c.args(["sh", "-c", &format!("exec {QMAILDIR}/bin/qmail-queue.orig")]);
    let bypass = j.feed(c, msg);
    assert_eq!(bypass.code, Some(126), "{bypass:?}");
    // no_new_privs: the set-group-id bit has no effect.
    let d = queue(&j, SITE, &["--no-new-privs"], msg, &env);
    assert_eq!(d.code, Some(71), "{d:?}");
    assert!(
        d.stderr.contains("set-group-id bit is not in effect"),
        "{d:?}"
    );
    // The original missing: refused before counting.
    assert!(j
        .root(&format!("chmod 0 {QMAILDIR}/bin/qmail-queue.orig"))
        .status
        .success());
    let d = queue(&j, SITE, &[], msg, &env);
    assert_eq!(d.code, Some(71), "{d:?}");
    assert_eq!(queued(&j).len(), 1);
    assert_eq!(j.total("site1@localhost"), Some(1));
}

#[test]
fn queue_front_off_puts_the_original_back() {
    let Some(j) = front() else { return };
    let manifest = env!("CARGO_MANIFEST_DIR");
    let stat = |f: &str| {
        let o = j.root(&format!("stat -c '%U:%G %a' {QMAILDIR}/bin/{f}"));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(stat("qmail-queue"), "root:overlimit 2711");
    assert_eq!(stat("qmail-queue.orig"), "qmailq:overlimit 4110");
    // Again: still one front, the original kept.
    let again = j.root(&format!(
        "make -s -C {manifest} queue-front-on QMAILDIR={QMAILDIR}"
    ));
    assert!(again.status.success());
    assert_eq!(stat("qmail-queue.orig"), "qmailq:overlimit 4110");
    let off = j.root(&format!(
        "make -s -C {manifest} queue-front-off QMAILDIR={QMAILDIR}"
    ));
    assert!(off.status.success(), "{}", jail::text(&off));
    assert_eq!(stat("qmail-queue"), "qmailq:qmailq 4711");
    assert!(!common::exists(
        &j.path(&format!("{QMAILDIR}/bin/qmail-queue.orig"))
    ));
    // Uncounted again, as before the swap.
    let d = queue(&j, SITE, &[], b"\n", &envelope("s", &["a@x"]));
    assert_eq!(d.code, Some(0));
    assert_eq!(j.total("site1@localhost"), None);
}

#[test]
fn a_low_file_size_limit_is_a_refusal_not_a_signal() {
    let Some(j) = front() else { return };
    let msg = vec![b'x'; 1 << 20];
    let d = queue(&j, SITE, &[], &msg, &envelope("s", &["a@x"]));
    assert_eq!(d.code, Some(0), "{d:?}");
    // Run under prlimit through sh, so the limit holds for the front itself.
    let mut c = j.as_user(SITE, &[]);
    c.args([
        "prlimit",
        "--fsize=65536:65536",
        &format!("{QMAILDIR}/bin/qmail-queue"),
    ]);
    let d = feed_queue(c, &msg, &envelope("s", &["a@x"]));
    assert_eq!(d.code, Some(53), "{d:?}");
    assert!(
        d.stderr
            .contains("cannot buffer the message: File too large"),
        "{d:?}"
    );
    assert_eq!(j.total("site1@localhost"), Some(1));
}

#[test]
fn the_original_gets_private_copies_whatever_the_site_does_with_its_files() {
    let Some(j) = front() else { return };
    // Bytes after the envelope's final NUL are not the envelope: the
    // original is handed exactly what was counted.
    let mut env = envelope("s", &["a@x"]);
    env.extend_from_slice(b"Tb@y\0Tc@z\0\0");
    let d = queue(&j, SITE, &[], b"Subject: s\n\nx\n", &env);
    assert_eq!(d.code, Some(0), "{d:?}");
    assert_eq!(queued(&j)[0].1, envelope("s", &["a@x"]));
    // Message and envelope in files the site rewrites while the count waits
    // on a lock held here, and fd 0 and fd 1 one and the same file.
    let lock = {
        use std::os::fd::AsRawFd;
        let f =
            std::fs::File::open(j.path(&format!("{QMAILDIR}/overlimit/site1@localhost"))).unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        f
    };
    let script = format!(
        "cd $(mktemp -d); printf 'Subject: first\\n\\nx\\n' > m; printf 'Fs\\0Ta@x\\0\\0' > e
{QMAILDIR}/bin/qmail-queue < m 1< e & p=$!
sleep 0.3
printf 'Subject: second\\n\\nx\\n' > m; printf 'Fs\\0Ta@x\\0Tv1@x\\0Tv2@x\\0\\0' > e
wait $p; echo queued=$?
printf 'Fs\\0Ta@x\\0\\0' > both; {QMAILDIR}/bin/qmail-queue <> both 1>&0; echo same=$?"
    );
    let mut c = j.as_user(SITE, &[]);
    c.args(["sh", "-c", &script]);
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
    drop(lock);
    let d = process::finish(child, Instant::now());
    assert!(d.stdout.contains("queued=0"), "{d:?}");
    let q = queued(&j);
    assert_eq!(q[1].0, b"Subject: first\n\nx\n");
    assert_eq!(q[1].1, envelope("s", &["a@x"]));
    // One file as both: the message is all of it, the envelope ends early.
    assert!(d.stdout.contains("same=54"), "{d:?}");
    assert_eq!((q.len(), j.total("site1@localhost")), (2, Some(2)));
}

//! sendmail-overlimit and overlimit-count, run for real with a recording
//! stand-in for the real sendmail: which messages go out, with which flags
//! and bytes, how recipients are counted, how refusals read, and (as root)
//! that a plain user cannot touch the counters while the wrapper counts for
//! it. The real MTA is tests/postfix.rs's business.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WRAPPER: &str = env!("CARGO_BIN_EXE_sendmail-overlimit");
const COUNT: &str = env!("CARGO_BIN_EXE_overlimit-count");

/// A stand-in sendmail: saves its arguments (one a line) and its stdin as
/// `N.args` and `N.msg` in the directory it is written for.
fn stand_in(script: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    let text = format!(
        "#!/bin/sh\nd='{}'\ni=0\nwhile [ -e \"$d/$i.args\" ]; do i=$((i+1)); done\n\
         cat > \"$d/$i.msg\"\nprintf '%s\\n' \"$@\" > \"$d/$i.args\"\n",
        out.display()
    );
    std::fs::write(script, text).unwrap();
    std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The messages a stand-in recorded, in order: (arguments, bytes).
fn recorded(out: &Path) -> Vec<(Vec<String>, Vec<u8>)> {
    (0..)
        .map(|i| (out.join(format!("{i}.args")), out.join(format!("{i}.msg"))))
        .take_while(|(a, _)| a.exists())
        .map(|(a, m)| {
            let args = std::fs::read_to_string(a).unwrap();
            (
                args.lines().map(String::from).collect(),
                std::fs::read(m).unwrap(),
            )
        })
        .collect()
}

/// What one run of a program fed on stdin left.
#[derive(Debug)]
struct Done {
    code: Option<i32>,
    stderr: String,
}

/// Starts `cmd`. A program copied into place by a test may be briefly "busy"
/// (ETXTBSY): a child another test thread forked meanwhile holds a copy of
/// the descriptor that wrote it until that child's exec. Retried, boundedly.
fn spawn(cmd: &mut Command) -> std::process::Child {
    let started = Instant::now();
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && started.elapsed() < HANG => {
                std::thread::sleep(Duration::from_millis(10));
            }
            started_child => return started_child.expect("start program"),
        }
    }
}

/// Runs `cmd` with `input` on stdin, failing the test if it hangs.
fn feed(mut cmd: Command, input: &[u8]) -> Done {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd);
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A refusal may come before the whole message is read: ignore EPIPE.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HANG {
            let _ = child.kill();
            panic!("program hung for {HANG:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    Done {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The login of the user running the tests: its default client is
/// `LOGIN@localhost`.
fn login() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// A sandbox with a stand-in sendmail and a senders file.
struct Local {
    s: Sandbox,
    me: String,
}

impl Local {
    fn with_limits(text: &str) -> Local {
        let s = Sandbox::with_limits(text);
        stand_in(&s.root.join("sendmail"), &s.root.join("sent"));
        Local { s, me: login() }
    }

    /// Replaces control/overlimit-senders; `LOGIN` stands for the test user.
    fn senders(&self, text: &str) {
        let text = text.replace("LOGIN", &self.me);
        std::fs::write(self.s.root.join("overlimit-senders"), text).unwrap();
    }

    /// The wrapper with this sandbox's environment and stand-in.
    fn wrapper(&self, args: &[&str]) -> Command {
        self.program(Path::new(WRAPPER), args)
    }

    /// A copy of the wrapper at `program`, likewise.
    fn program(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .args(args)
            .env("RELAYLIMITS", self.s.control())
            .env("OVERLIMITDIR", self.s.dir())
            .env("OVERLIMIT_SENDERS", self.s.root.join("overlimit-senders"))
            .env("OVERLIMIT_SENDMAIL", self.s.root.join("sendmail"));
        cmd
    }

    fn send(&self, args: &[&str], message: &str) -> Done {
        feed(self.wrapper(args), message.as_bytes())
    }

    fn sent(&self) -> Vec<(Vec<String>, Vec<u8>)> {
        recorded(&self.s.root.join("sent"))
    }

    /// The classic count in a counter file; 0 if it is missing.
    fn total(&self, file: &str) -> u64 {
        self.s.total(file).unwrap_or(0)
    }

    fn own(&self) -> String {
        format!("{}@localhost", self.me)
    }
}

/// A PHP 8 message (CRLF) to `to`.
fn php_message(to: &str, subject: &str) -> String {
    format!("To: {to}\r\nSubject: {subject}\r\nFrom: site@example.com\r\n\r\nHello.\r\n")
}

#[test]
fn flags_and_message_reach_the_real_sendmail_unchanged() {
    let l = Local::with_limits(":100\n");
    let message = php_message("a@example.org", "Order 17");
    let args = ["-t", "-i", "-f", "me@example.com", "-F", "Web Shop", "-oi"];
    let done = l.send(&args, &message);
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.stderr, "", "a message that passes prints nothing");
    let sent = l.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, args);
    assert_eq!(sent[0].1, message.as_bytes());
}

#[test]
fn header_recipients_count_with_crlf_and_with_lf() {
    for end in ["\r\n", "\n"] {
        let l = Local::with_limits(":100\n");
        let message = [
            "To: a@example.org,",
            "  \"Doe, John\" <john@example.org>",
            "Cc: Team: b@example.org, c@example.org;",
            "Bcc: d@example.org",
            "Subject: four in the header",
            "",
            "To: not-a-recipient@example.org",
            "",
        ]
        .join(end);
        // With -t, argument recipients count as well.
        let done = l.send(&["-t", "-i", "e@example.org"], &message);
        assert_eq!(done.code, Some(0), "{done:?}");
        assert_eq!(l.total(&l.own()), 6, "line end {end:?}");
    }
}

#[test]
fn without_t_only_argument_recipients_count() {
    let l = Local::with_limits(":100\n");
    let done = l.send(
        &["-i", "a@example.org,b@example.org"],
        &php_message("x@y, z@w", "s"),
    );
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(l.total(&l.own()), 2);
}

#[test]
fn a_limit_of_five_passes_two_messages_of_two_and_refuses_the_third() {
    let l = Local::with_limits("*@localhost:5\n");
    let message = php_message("a@example.org, b@example.org", "Newsletter");
    for _ in 0..2 {
        let done = l.send(&["-t", "-i"], &message);
        assert_eq!(done.code, Some(0), "{done:?}");
    }
    let done = l.send(&["-t", "-i"], &message);
    // 111, never 75: PHP 8.5's mail() takes 75 for success.
    assert_eq!(done.code, Some(111));
    assert_eq!(l.sent().len(), 2, "the refused message must not be sent");
    assert_eq!(l.total(&l.own()), 4, "a refused message counts nothing");
    let expected = format!(
        "sendmail-overlimit: refused {}: limit 5 reached (4 counted, 2 asked; until reset); \
         uid {}, 2 recipients, subject \"Newsletter\"\n",
        l.own(),
        uid()
    );
    assert_eq!(done.stderr, expected);
    // One recipient still fits.
    assert_eq!(
        l.send(&["a@example.org"], &php_message("a@example.org", "x"))
            .code,
        Some(0)
    );
}

#[test]
fn a_message_with_more_recipients_than_the_limit_is_refused_for_good() {
    let l = Local::with_limits(":2/1h\n");
    let done = l.send(&["-t"], &php_message("a@x.org, b@x.org, c@x.org", "Big"));
    assert_eq!(done.code, Some(100), "{done:?}");
    assert!(
        done.stderr
            .contains("limit 2/1h is below the message's 3 recipients"),
        "{}",
        done.stderr
    );
    assert!(l.sent().is_empty());
}

#[test]
fn a_message_counts_all_or_nothing_across_the_account_and_the_local_domain() {
    let l = Local::with_limits("*@localhost:10\n@localhost:3\n");
    assert_eq!(
        l.send(&["-t"], &php_message("a@x.org, b@x.org", "one"))
            .code,
        Some(0)
    );
    let done = l.send(&["-t"], &php_message("a@x.org, b@x.org", "two"));
    assert_eq!(done.code, Some(111), "{done:?}");
    assert!(
        done.stderr
            .contains("@localhost limit 3 reached (2 counted, 2 asked"),
        "{}",
        done.stderr
    );
    // The account's own counter had room but took nothing either.
    assert_eq!(l.total(&l.own()), 2);
    assert_eq!(l.sent().len(), 1);
}

#[test]
fn stamping_puts_the_client_and_uid_on_top_with_the_messages_line_end() {
    for end in ["\r\n", "\n"] {
        let l = Local::with_limits(":100\n");
        let message = php_message("a@example.org", "Stamped").replace("\r\n", end);
        assert_eq!(l.send(&["--stamp", "-t", "-i"], &message).code, Some(0));
        let stamp = format!("X-Overlimit-Client: {} (uid {}){end}", l.own(), uid());
        assert_eq!(l.sent()[0].1, format!("{stamp}{message}").as_bytes());
    }
}

#[test]
fn the_envelope_sender_is_set_unless_the_caller_gave_one() {
    let l = Local::with_limits(":100\n");
    let message = php_message("a@example.org", "s");
    l.send(&["--sender", "bounces@example.com", "-t", "-i"], &message);
    l.send(
        &[
            "--sender=bounces@example.com",
            "-t",
            "-r",
            "own@example.com",
        ],
        &message,
    );
    l.send(
        &["--sender", "bounces@example.com", "-t", "-fown@example.com"],
        &message,
    );
    let args: Vec<Vec<String>> = l.sent().into_iter().map(|(a, _)| a).collect();
    assert_eq!(args[0], ["-f", "bounces@example.com", "-t", "-i"]);
    assert_eq!(args[1], ["-t", "-r", "own@example.com"]);
    assert_eq!(args[2], ["-t", "-fown@example.com"]);
}

#[test]
fn a_mapped_account_counts_as_its_first_name_and_may_ask_only_for_listed_ones() {
    let l = Local::with_limits(":100\n");
    l.senders("# the shop's site\nLOGIN: shop@example.com\nLOGIN:info@example.com\nsomeone:other@example.com\n");
    let message = php_message("a@example.org", "s");
    assert_eq!(l.send(&["-t"], &message).code, Some(0));
    assert_eq!(
        l.send(&["--client", "Info@Example.com", "-t"], &message)
            .code,
        Some(0)
    );
    assert_eq!(
        (l.total("shop@example.com"), l.total("info@example.com")),
        (1, 1)
    );
    assert_eq!(
        l.total(&l.own()),
        0,
        "the mapping replaces the default name"
    );
    for name in ["other@example.com", l.own().as_str()] {
        let done = l.send(&["--client", name, "-t"], &message);
        assert_eq!(done.code, Some(100), "{name}: {done:?}");
        let why = format!("{} may not send as {name}", l.me);
        assert!(done.stderr.contains(&why), "{}", done.stderr);
    }
    assert_eq!(l.sent().len(), 2);
}

#[test]
fn a_star_line_lets_the_account_use_any_name() {
    let l = Local::with_limits(":100\n");
    l.senders("LOGIN:*\n");
    let done = l.send(
        &["--client", "vhost@example.net", "-t"],
        &php_message("a@x.org", "s"),
    );
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(l.total("vhost@example.net"), 1);
}

#[test]
fn a_second_client_option_cannot_replace_the_administrators() {
    let l = Local::with_limits(":100\n");
    l.senders("LOGIN:*\n");
    // PHP appends mail()'s fifth argument to sendmail_path.
    let done = l.send(
        &[
            "--client",
            "site1@example.com",
            "-t",
            "-i",
            "--client",
            "site2@example.com",
        ],
        &php_message("a@x.org", "s"),
    );
    assert_eq!(done.code, Some(100));
    assert_eq!(
        done.stderr,
        "sendmail-overlimit: --client given twice; nothing sent\n"
    );
    assert!(l.sent().is_empty());
}

#[test]
fn one_name_shared_with_an_smtp_user_stops_both_paths_at_the_same_limit() {
    let l = Local::with_limits("info@example.com:5\n");
    l.senders("LOGIN:info@example.com\n");
    let three = php_message("a@x.org, b@x.org, c@x.org", "from the site");
    assert_eq!(l.send(&["-t", "-i"], &three).code, Some(0));
    assert_eq!(l.s.user("info@example.com").code(), 112);
    assert_eq!(l.s.user("info@example.com").code(), 112);
    // Five counted between the two paths: both are full now.
    assert_eq!(l.s.user("info@example.com").code(), 113);
    let done = l.send(&["-t", "-i"], &php_message("a@x.org", "one more"));
    assert_eq!(done.code, Some(111), "{done:?}");
    assert!(
        done.stderr
            .contains("refused info@example.com: limit 5 reached (5 counted"),
        "{}",
        done.stderr
    );
    assert_eq!(l.total("info@example.com"), 5);
    assert_eq!(l.sent().len(), 1);
}

#[test]
fn modes_whose_recipients_cannot_be_counted_are_refused() {
    let l = Local::with_limits(":100\n");
    for args in [&["-bs"][..], &["-q"], &["-bi"]] {
        let done = l.send(args, "HELO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n");
        assert_eq!(done.code, Some(100), "{args:?}");
        assert!(done.stderr.contains("is not supported"), "{}", done.stderr);
    }
    assert!(l.sent().is_empty());
}

#[test]
fn a_message_without_recipients_passes_through_uncounted() {
    let l = Local::with_limits(":1\n");
    let message = "Subject: no recipients\n\nbody\n";
    let done = l.send(&["-i"], message);
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(l.sent()[0].1, message.as_bytes());
    assert!(l.s.counter_files().is_empty());
}

#[test]
fn a_message_over_32_mib_is_refused() {
    let l = Local::with_limits(":100\n");
    let mut message = php_message("a@x.org", "huge");
    message.push_str(&"x".repeat(32 << 20));
    let done = l.send(&["-t"], &message);
    assert_eq!(done.code, Some(100), "{done:?}");
    assert_eq!(
        done.stderr,
        "sendmail-overlimit: message larger than 32 MiB; nothing sent\n"
    );
    assert!(l.sent().is_empty());
}

#[test]
fn internal_errors_pass_unprivileged_unless_failclosed() {
    let l = Local::with_limits(":100\n");
    let message = php_message("a@x.org", "s");
    let mut cmd = l.wrapper(&["-t"]);
    cmd.env("OVERLIMITDIR", l.s.root.join("missing"));
    let done = feed(cmd, message.as_bytes());
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(
        done.stderr
            .starts_with("overlimit-count: internal error, message passes uncounted: open "),
        "{}",
        done.stderr
    );
    let mut cmd = l.wrapper(&["-t"]);
    cmd.env("OVERLIMITDIR", l.s.root.join("missing"))
        .env("OVERLIMIT_FAILCLOSED", "1");
    let done = feed(cmd, message.as_bytes());
    assert_eq!(done.code, Some(111), "{done:?}");
    assert!(
        done.stderr.contains(": internal error: open "),
        "{}",
        done.stderr
    );
    assert_eq!(l.sent().len(), 1);
}

#[test]
fn without_its_counter_program_the_wrapper_sends_nothing() {
    let l = Local::with_limits(":100\n");
    // A copy of the wrapper alone: no overlimit-count beside it.
    let lone = l.s.root.join("sendmail-overlimit");
    std::fs::copy(WRAPPER, &lone).unwrap();
    let cmd = l.program(&lone, &["-t"]);
    let done = feed(cmd, php_message("a@x.org", "s").as_bytes());
    assert_eq!(done.code, Some(111), "{done:?}");
    assert!(
        done.stderr.contains("overlimit-count: No such file"),
        "{}",
        done.stderr
    );
    assert!(l.sent().is_empty());
}

#[test]
fn counters_the_plugin_creates_are_group_writable_whatever_its_umask() {
    let s = Sandbox::with_limits(":100\n");
    let plugin = Run::new("/bin/sh")
        .args(&["-c", "umask 077; exec \"$0\"", PLUGIN])
        .env("RELAYLIMITS", s.control())
        .env("OVERLIMITDIR", s.dir())
        .env("RELAYCLIENT", "")
        .env("TCPREMOTEIP", "192.0.2.7");
    assert_eq!(plugin.code(), 112);
    let mode = std::fs::metadata(s.dir().join("192.0.2.7")).unwrap().mode();
    assert_eq!(mode & 0o770, 0o660, "mode {mode:o}");
}

#[test]
fn overlimit_count_answers_with_the_client_or_the_reason() {
    let s = Sandbox::with_limits("*@localhost:1\n");
    let run = |args: &[&str]| {
        let out = Command::new(COUNT)
            .env_clear()
            .args(args)
            .env("RELAYLIMITS", s.control())
            .env("OVERLIMITDIR", s.dir())
            .env("OVERLIMIT_SENDERS", s.root.join("none"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let own = format!("{}@localhost", login());
    assert_eq!(run(&["1"]), (Some(0), format!("{own}\n")));
    let (code, line) = run(&["1"]);
    assert_eq!(code, Some(111));
    assert!(
        line.starts_with(&format!("{own}: limit 1 reached")),
        "{line}"
    );
    assert_eq!(run(&["0"]).0, Some(100));
    assert_eq!(run(&["--client"]).0, Some(100));
}

// ---- The privilege model, as root: a real setgid counter and a plain user.

const SITE_USER: &str = "overlimit-site";

/// Runs a command quietly; true if it exited 0.
fn ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn gid_of(group: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.split(':').nth(2).unwrap().parse().unwrap()
}

/// Makes group `overlimit` and a site user if missing, for as long as the
/// guard lives (the host keeps only the accounts it had); `Err` says why not.
fn site_user() -> Result<TempAccounts, String> {
    if uid() != 0 {
        return Err("not running as root".into());
    }
    let accounts = TempAccounts::new("overlimit", SITE_USER)?;
    if !ok("unshare", &["-m", "true"]) {
        return Err("unshare -m is not permitted here".into());
    }
    Ok(accounts)
}

/// The installed layout, in a directory bind-mounted over /var/qmail for each
/// command (in a private mount namespace, so the host's is untouched).
struct Installed {
    root: PathBuf,
}

impl Installed {
    fn new() -> Installed {
        let root = std::env::temp_dir().join(format!("overlimit-priv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["bin", "control", "overlimit", "out"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mode =
            |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        mode(&root, 0o755);
        std::fs::copy(WRAPPER, root.join("bin/sendmail-overlimit")).unwrap();
        let count = root.join("bin/overlimit-count");
        std::fs::copy(COUNT, &count).unwrap();
        // As `make install` does: root:overlimit, setgid.
        let gid = gid_of("overlimit");
        std::os::unix::fs::chown(&count, Some(0), Some(gid)).unwrap();
        mode(&count, 0o2755);
        // The counter directory: the qmail-smtpd user (root stands in) and
        // group overlimit, nobody else.
        std::os::unix::fs::chown(root.join("overlimit"), Some(0), Some(gid)).unwrap();
        mode(&root.join("overlimit"), 0o2770);
        std::fs::write(root.join("control/relaylimits"), "*@localhost:2\n").unwrap();
        std::fs::write(
            root.join("control/overlimit-senders"),
            "someone-else:shop@example.com\n",
        )
        .unwrap();
        mode(&root.join("out"), 0o777);
        stand_in(&root.join("out/sendmail"), &root.join("out/sent"));
        mode(&root.join("out/sent"), 0o777);
        // A control file of the site's own that would let it send anything.
        std::fs::write(root.join("out/mine"), ":0\n").unwrap();
        Installed { root }
    }

    /// `ARGS` as the site user under umask 077, with /var/qmail being ours.
    fn as_site(&self, args: &[&str], input: &str) -> Done {
        let mut cmd = Command::new("unshare");
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            // Ignored under privilege: the site's own limits and counters.
            .env("RELAYLIMITS", self.root.join("out/mine"))
            .env("OVERLIMITDIR", self.root.join("out"))
            .env("OVERLIMIT_MONITOR", "1")
            .env("OVERLIMIT_SENDMAIL", self.root.join("out/sendmail"))
            .args(["-m", "sh", "-c"])
            .arg(
                "mkdir -p /var/qmail && mount --bind \"$1\" /var/qmail || exit 97; shift; \
                 umask 077; u=$1; shift; \
                 exec setpriv --reuid=\"$u\" --regid=\"$u\" --init-groups -- \"$@\"",
            )
            .arg("sh")
            .arg(&self.root)
            .arg(SITE_USER)
            .args(args);
        feed(cmd, input.as_bytes())
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn a_site_user_cannot_touch_the_counters_but_the_wrapper_counts_for_it() {
    let _accounts = match site_user() {
        Ok(accounts) => accounts,
        Err(why) => return skip(&why),
    };
    let i = Installed::new();
    let wrapper = "/var/qmail/bin/sendmail-overlimit";
    let message = php_message("a@example.org", "from a site");
    let done = i.as_site(&["touch", "/var/qmail/overlimit/forged"], "");
    assert_ne!(done.code, Some(97), "bind mount failed: {}", done.stderr);
    assert!(done.stderr.contains("Permission denied"), "{done:?}");
    for _ in 0..2 {
        let done = i.as_site(&[wrapper, "-t", "-i"], &message);
        assert_eq!(done.code, Some(0), "{done:?}");
    }
    let done = i.as_site(&[wrapper, "-t", "-i"], &message);
    assert_eq!(done.code, Some(111), "{done:?}");
    let refused = format!("refused {SITE_USER}@localhost: limit 2 reached (2 counted");
    assert!(done.stderr.contains(&refused), "{}", done.stderr);
    assert_eq!(recorded(&i.root.join("out/sent")).len(), 2);

    let counter = i.root.join(format!("overlimit/{SITE_USER}@localhost"));
    let meta = std::fs::metadata(&counter).expect("the counter has the site's name");
    assert_eq!(
        (meta.gid(), meta.mode() & 0o777),
        (gid_of("overlimit"), 0o660)
    );
    for path in [
        counter.to_str().unwrap(),
        &format!("/var/qmail/overlimit/{SITE_USER}@localhost"),
    ] {
        let done = i.as_site(&["cat", path], "");
        assert!(
            done.stderr.contains("Permission denied"),
            "{path}: {done:?}"
        );
    }

    let done = i.as_site(&[wrapper, "--client", "shop@example.com", "-t"], &message);
    assert_eq!(done.code, Some(100), "{done:?}");
    assert!(!i.root.join("overlimit/shop@example.com").exists());
    assert!(
        !i.root.join(format!("out/{SITE_USER}@localhost")).exists(),
        "OVERLIMITDIR from the environment was used under privilege"
    );
}

#[test]
fn the_example_senders_file_means_what_its_comments_say() {
    use overlimit::local::senders::for_login;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("control-examples/overlimit-senders");
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

//! A private Postfix instance for tests: its own configuration, queue,
//! mail spool and log in one fresh temporary directory, only the services
//! local delivery needs, none chrooted, stopped and removed when dropped.
//! What differs between the tests that use it are `Options`: smtpd on a
//! loopback port with SMTP AUTH from Cyrus SASL (a sasldb made with
//! saslpasswd2), for tests/postfix_policy.rs, which sends mail with swaks the
//! way a customer's mail client would and sets the policy service up from
//! the lines in control-examples/; or a configuration that a jail
//! (tests/support/jail.rs) mounts over /etc/postfix, the instance started
//! inside it, for tests/postfix.rs; and lines of main.cf of the test's own.
//!
//! For the policy tests the directory also holds the SASL database, the
//! counters and copies of the programs, so that the unprivileged account
//! that runs them can reach them wherever the checkout is.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const POSTFIX: &str = "/usr/sbin/postfix";
pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Delivery on loopback takes well under a second; this only bounds a failure.
pub const WAIT: Duration = Duration::from_secs(60);
/// The account that runs the policy programs and owns the counters.
pub const RUN_AS: &str = "nobody";
pub const PASSWORD: &str = "secret-for-tests";

/// The services local delivery needs, none chrooted, none on the network;
/// `configure` adds smtpd on a loopback port when asked to.
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// Debian's Postfix installation files (meta_directory, /etc/postfix).
const META_FILES: [&str; 6] = [
    "postfix-files",
    "postfix-files.d",
    "dynamicmaps.cf",
    "dynamicmaps.cf.d",
    "postfix-script",
    "post-install",
];

/// Why no private Postfix can start here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !Path::new(POSTFIX).exists() {
        return Some(format!("{POSTFIX} is missing (apt-get install postfix)"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("starting Postfix needs root".into());
    }
    None
}

/// Why the policy tests (smtpd, SASL, swaks, setpriv) cannot run here, if
/// they cannot.
pub fn policy_unavailable() -> Option<String> {
    for (tool, package) in [
        (POSTFIX, "postfix"),
        ("/usr/bin/swaks", "swaks"),
        ("/usr/sbin/saslpasswd2", "sasl2-bin"),
        ("/usr/bin/setpriv", "util-linux"),
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing (apt-get install {package})"));
        }
    }
    for module in ["libsasldb", "libplain"] {
        if !sasl_module(module) {
            return Some(format!(
                "Cyrus SASL's {module} module is missing \
                 (apt-get install libsasl2-modules libsasl2-modules-db)"
            ));
        }
    }
    unavailable()
}

/// Whether a Cyrus SASL plug-in named `prefix*` is installed, in
/// /usr/lib/TRIPLET/sasl2 (Debian's multiarch place) or /usr/lib/sasl2.
fn sasl_module(prefix: &str) -> bool {
    let mut dirs = vec![PathBuf::from("/usr/lib/sasl2")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("sasl2")));
    }
    dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|mut files| {
            files.any(|f| f.is_ok_and(|f| f.file_name().to_string_lossy().starts_with(prefix)))
        })
    })
}

/// For a policy test: skips (tests/common's `skip`: `skipped: WHY` on
/// stderr, a failure under CI=true) and returns true when it cannot run.
pub fn skip_unless_available() -> bool {
    let Some(why) = policy_unavailable() else {
        return false;
    };
    crate::common::skip(&why);
    true
}

/// The control-examples file `name`, with its paths pointed into `root`.
pub fn example(name: &str, root: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("control-examples")
        .join(name);
    let r = root.display();
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace(
            "/var/qmail/control/relaylimits",
            &format!("{r}/relaylimits"),
        )
        .replace("/var/qmail/overlimit", &format!("{r}/overlimit"))
        .replace(
            "/var/qmail/bin/overlimit-policy",
            &format!("{r}/bin/overlimit-policy"),
        )
        .replace("user=overlimit", &format!("user={RUN_AS}"))
}

/// What an instance has beyond local delivery.
#[derive(Default)]
pub struct Options<'a> {
    /// smtpd on a free loopback port, with SMTP AUTH (Cyrus SASL, a sasldb)
    /// for these logins (`user@realm`), all with `PASSWORD`. `None`: no
    /// network service.
    pub smtpd_sasl_logins: Option<&'a [&'a str]>,
    /// Lines for the end of main.cf.
    pub main_cf: String,
    /// Lines for the end of master.cf.
    pub master_cf: String,
    /// The configuration is to be mounted over /etc/postfix (in a jail): the
    /// installation files `postfix start` checks against come along.
    pub replaces_etc_postfix: bool,
}

/// A private instance; `configure` writes its files, `start` starts it.
pub struct Postfix {
    pub root: PathBuf,
    /// smtpd's loopback port, if it has one.
    pub port: Option<u16>,
}

impl Postfix {
    /// A fresh directory for an instance (its name says which test's).
    pub fn new(name: &str) -> Postfix {
        let root = crate::common::fresh_dir(name);
        // Postfix's daemons, as user postfix, work below it.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["etc", "queue", "data", "spool"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Postfix { root, port: None }
    }

    /// Writes main.cf, master.cf and, with smtpd, the SASL configuration and
    /// database.
    pub fn configure(&mut self, options: Options) {
        let r = self.root.display();
        let mut main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {r}/queue
data_directory = {r}/data
mail_spool_directory = {r}/spool
maillog_file_prefixes = {r}
maillog_file = {r}/maillog
myhostname = overlimit-test.invalid
myorigin = $myhostname
mydestination = $myhostname, localhost
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
biff = no
relayhost =
default_transport = error:this test sends no mail out
"
        );
        let mut master_cf = MASTER_CF.to_string();
        if let Some(logins) = options.smtpd_sasl_logins {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            self.port = Some(port);
            main_cf.push_str(&format!(
                "smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {r}/etc/sasl
"
            ));
            master_cf.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n"));
            self.sasl_logins(logins);
        }
        main_cf.push_str(&options.main_cf);
        master_cf.push_str(&options.master_cf);
        std::fs::write(self.config().join("main.cf"), main_cf).unwrap();
        std::fs::write(self.config().join("master.cf"), master_cf).unwrap();
        if options.replaces_etc_postfix {
            let copy = Command::new("cp")
                .arg("-r")
                .args(META_FILES.map(|f| format!("/etc/postfix/{f}")))
                .arg(self.config())
                .status()
                .unwrap();
            assert!(
                copy.success(),
                "copying Postfix's installation files failed"
            );
        }
        // Postfix wants its data directory for itself; local delivery writes
        // mailboxes as each recipient.
        self.chown("postfix", "data");
        std::fs::set_permissions(
            self.root.join("spool"),
            std::fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
    }

    /// The SASL configuration and a sasldb with `logins`, readable by smtpd
    /// (user postfix).
    fn sasl_logins(&self, logins: &[&str]) {
        let r = self.root.display();
        std::fs::create_dir_all(self.config().join("sasl")).unwrap();
        std::fs::write(
            self.config().join("sasl/smtpd.conf"),
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n\
                 sasldb_path: {r}/etc/sasldb2\n"
            ),
        )
        .unwrap();
        for user in logins {
            let (login, realm) = user.split_once('@').unwrap();
            let mut saslpasswd = Command::new("saslpasswd2");
            saslpasswd
                .env_clear()
                .env("PATH", PATH)
                .arg("-f")
                .arg(self.config().join("sasldb2"))
                .args(["-p", "-c", "-u", realm, login]);
            let out = crate::process::feed(saslpasswd, PASSWORD.as_bytes());
            assert_eq!(out.code, Some(0), "saslpasswd2 {user}: {out:?}");
        }
        std::fs::set_permissions(
            self.config().join("sasldb2"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }

    /// An instance for the policy tests: smtpd with SMTP AUTH for `logins`
    /// (all with `PASSWORD`), the policy service as control-examples/ sets it
    /// up, and the control file `limits`; started.
    pub fn with_policy_service(name: &str, logins: &[&str], limits: &str) -> Postfix {
        let mut pf = Postfix::new(name);
        for d in ["overlimit", "bin"] {
            std::fs::create_dir_all(pf.root.join(d)).unwrap();
        }
        for program in [
            env!("CARGO_BIN_EXE_overlimit-policy"),
            env!("CARGO_BIN_EXE_rcptcheck-overlimit"),
        ] {
            let to = pf
                .root
                .join("bin")
                .join(Path::new(program).file_name().unwrap());
            std::fs::copy(program, &to).unwrap();
        }
        // Mail for remote.example is relayed (counted) and then, by the
        // virtual alias, delivered here to nobody, where the test finds it.
        // mynetworks leaves loopback out: only SMTP AUTH may relay.
        let main_cf = format!(
            "mynetworks = 192.0.2.0/24
virtual_alias_maps = inline:{{ {{ @remote.example = nobody@localhost }} }}
{}",
            example("postfix-main.cf", &pf.root)
        );
        let master_cf = example("postfix-master.cf", &pf.root);
        pf.configure(Options {
            smtpd_sasl_logins: Some(logins),
            main_cf,
            master_cf,
            ..Options::default()
        });
        // The policy programs (user nobody) write the counters.
        pf.chown(RUN_AS, "overlimit");
        pf.limits(limits);
        pf.start(None);
        pf
    }

    /// `postfix start`, run as the arguments of `runner` (the jail's
    /// nsenter, say, so that local(8) finds the jail's accounts, as it would
    /// find the sites' on a server) or directly; with smtpd, waits until it
    /// listens.
    pub fn start(&self, runner: Option<Command>) {
        let out = self.postfix_by(runner, &["start"]);
        assert!(
            out.status.success(),
            "postfix start: {}",
            self.diagnostics(&out)
        );
        if let Some(port) = self.port {
            self.wait_until("smtpd listening", || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
    }

    pub fn chown(&self, owner: &str, path: &str) {
        let ok = Command::new("chown")
            .arg(owner)
            .arg(self.root.join(path))
            .status()
            .unwrap();
        assert!(ok.success(), "chown {owner} {path}");
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("etc")
    }

    pub fn control(&self) -> PathBuf {
        self.root.join("relaylimits")
    }

    pub fn counters(&self) -> PathBuf {
        self.root.join("overlimit")
    }

    /// Replaces the control file (world-readable, as the policy user reads it).
    pub fn limits(&self, text: &str) {
        std::fs::write(self.control(), text).unwrap();
        std::fs::set_permissions(self.control(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// `postfix -c CONFIG ARGS`.
    pub fn postfix(&self, args: &[&str]) -> Output {
        self.postfix_by(None, args)
    }

    /// `postfix -c CONFIG ARGS` as the arguments of `runner`, or directly.
    fn postfix_by(&self, runner: Option<Command>, args: &[&str]) -> Output {
        let mut c = match runner {
            Some(mut runner) => {
                runner.arg(POSTFIX);
                runner
            }
            None => {
                let mut c = Command::new(POSTFIX);
                c.env_clear().env("PATH", PATH);
                c
            }
        };
        c.arg("-c").arg(self.config()).args(args).output().unwrap()
    }

    /// Sets main.cf parameters with postconf and reloads Postfix.
    pub fn reconfigure(&self, settings: &[&str]) {
        let out = Command::new("postconf")
            .env_clear()
            .env("PATH", PATH)
            .arg("-c")
            .arg(self.config())
            .arg("-e")
            .args(settings)
            .output()
            .unwrap();
        assert!(out.status.success(), "postconf: {}", self.diagnostics(&out));
        let out = self.postfix(&["reload"]);
        assert!(
            out.status.success(),
            "postfix reload: {}",
            self.diagnostics(&out)
        );
        // smtpd processes started before the reload finish their sessions;
        // a new connection meets the new configuration once master re-read it.
        self.wait_until("reload", || self.maillog().contains("reload -- version"));
    }

    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.root.join("maillog")).unwrap_or_default()
    }

    pub fn diagnostics(&self, out: &Output) -> String {
        format!(
            "{}{}\nmaillog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.maillog()
        )
    }

    /// One message with swaks, as `login` (SMTP AUTH PLAIN) or without
    /// AUTH; the whole transcript.
    pub fn swaks(&self, login: Option<&str>, to: &str, token: &str) -> String {
        let port = self.port.expect("an instance with smtpd");
        let mut cmd = Command::new("swaks");
        cmd.env_clear()
            .env("PATH", PATH)
            .args(["--server", &format!("127.0.0.1:{}", port)])
            .args(["--timeout", "20", "--to", to, "--body", token])
            .args(["--header", &format!("Subject: {token}")]);
        match login {
            Some(user) => cmd
                .args(["--from", user, "--auth", "PLAIN", "--auth-user", user])
                .args(["--auth-password", PASSWORD]),
            None => cmd.args(["--from", "someone@elsewhere.example"]),
        };
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// The mbox of `user` in the private spool.
    pub fn mailbox(&self, user: &str) -> String {
        std::fs::read_to_string(self.root.join("spool").join(user)).unwrap_or_default()
    }

    /// Messages in `user`'s mbox.
    pub fn delivered(&self, user: &str) -> usize {
        let mbox = self.mailbox(user);
        mbox.lines().filter(|l| l.starts_with("From ")).count()
    }

    /// `postqueue -j`: one JSON object per queued message.
    pub fn queue(&self) -> String {
        String::from_utf8_lossy(&self.postqueue().stdout).into_owned()
    }

    /// Whether the queue is empty: postqueue answered, and listed nothing.
    pub fn queue_is_empty(&self) -> bool {
        let out = self.postqueue();
        out.status.success() && out.stdout.trim_ascii().is_empty()
    }

    fn postqueue(&self) -> Output {
        Command::new("postqueue")
            .env_clear()
            .env("PATH", PATH)
            .arg("-c")
            .arg(self.config())
            .arg("-j")
            .output()
            .unwrap()
    }

    /// The messages pickup took from uid `uid`, and the recipients qmgr
    /// found in each (Postfix's own count of what was queued).
    pub fn queued_by(&self, uid: u32) -> Vec<u64> {
        let log = self.maillog();
        let ids: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("postfix/pickup") && l.contains(&format!(" uid={uid} ")))
            .filter_map(|l| l.split(": ").nth(1))
            .collect();
        ids.iter()
            .map(|id| {
                log.lines()
                    .filter(|l| l.contains("postfix/qmgr") && l.contains(&format!("{id}: from=")))
                    .find_map(|l| l.split("nrcpt=").nth(1)?.split(' ').next()?.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Waits until Postfix has picked up `messages` messages from `uid` and
    /// qmgr has counted their recipients, and the queue is empty; returns
    /// `queued_by(uid)`.
    pub fn settle(&self, uid: u32, messages: usize) -> Vec<u64> {
        let settled = || {
            let q = self.queued_by(uid);
            q.len() >= messages && q.iter().all(|&n| n > 0) && self.queue_is_empty()
        };
        self.wait_until(
            &format!("{messages} messages from uid {uid} queued and delivered"),
            settled,
        );
        self.queued_by(uid)
    }

    /// Waits, at most `WAIT`, until `done` holds.
    pub fn wait_until(&self, what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < WAIT,
                "{what}: not after {WAIT:?}; queue: {}\nmaillog:\n{}",
                self.queue(),
                self.maillog()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every message has left the queue (delivered).
    pub fn wait_until_delivered(&self) {
        self.wait_until("queue empty", || self.queue_is_empty());
    }

    /// A command run as `RUN_AS` with the instance's control file and counters.
    pub fn as_policy_user(&self, program: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.env_clear()
            .env("RELAYLIMITS", self.control())
            .env("OVERLIMITDIR", self.counters())
            .args(["--reuid", RUN_AS, "--regid", "nogroup", "--clear-groups"])
            .arg(self.root.join("bin").join(program));
        c
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let pid: Option<i32> = std::fs::read_to_string(self.root.join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        let _ = self.postfix(&["stop"]);
        // Removing the directory under a master still shutting down would
        // leave it complaining; wait for it, boundedly.
        if let Some(pid) = pid {
            let started = Instant::now();
            // SAFETY: signal 0 only checks that the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 && started.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

//! A private Postfix instance with smtpd on a loopback port, SMTP AUTH from
//! Cyrus SASL (a sasldb made with saslpasswd2) and the policy service set up
//! from the lines in control-examples/, for tests that send mail with swaks
//! the way a customer's mail client would.
//!
//! Everything lives in one temporary directory (configuration, queue,
//! mailboxes, SASL database, counters, copies of the programs, so that the
//! unprivileged account that runs them can reach them wherever the checkout
//! is) and is removed, with Postfix stopped, when the instance is dropped.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Delivery on loopback takes well under a second; this only bounds a failure.
pub const WAIT: Duration = Duration::from_secs(20);
/// The account that runs the policy programs and owns the counters.
pub const RUN_AS: &str = "nobody";
pub const PASSWORD: &str = "secret-for-tests";

/// The services local delivery and smtpd need, none chrooted; smtpd is
/// added on a loopback port by `start`.
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

/// Why these tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    for (tool, package) in [
        ("/usr/sbin/postfix", "postfix"),
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
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("starting Postfix needs root".into());
    }
    None
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

/// Fails under CI=true, else says `skipped: WHY` on stderr; true if skipped.
pub fn skip_unless_available() -> bool {
    let Some(why) = unavailable() else {
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

/// A running private instance.
pub struct Postfix {
    pub root: PathBuf,
    pub port: u16,
}

impl Postfix {
    /// Starts Postfix with smtpd on a free loopback port, SMTP AUTH for
    /// `users` (all with `PASSWORD`), and the control file `limits`.
    pub fn start(name: &str, users: &[&str], limits: &str) -> Postfix {
        let root = std::env::temp_dir().join(format!("overlimit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["etc/sasl", "queue", "data", "spool", "overlimit", "bin"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pf = Postfix { root, port };
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
        let r = pf.root.display();
        // Mail for remote.example is relayed (counted) and then, by the
        // virtual alias, delivered here to nobody, where the test finds it.
        // mynetworks leaves loopback out: only SMTP AUTH may relay.
        let main_cf = format!(
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
mynetworks = 192.0.2.0/24
alias_maps =
alias_database =
local_recipient_maps =
biff = no
relayhost =
default_transport = error:this test sends no mail out
virtual_alias_maps = inline:{{ {{ @remote.example = nobody@localhost }} }}
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {r}/etc/sasl
{}",
            example("postfix-main.cf", &pf.root)
        );
        std::fs::write(pf.root.join("etc/main.cf"), main_cf).unwrap();
        let master_cf = format!(
            "{MASTER_CF}127.0.0.1:{port} inet n - n - - smtpd\n{}",
            example("postfix-master.cf", &pf.root)
        );
        std::fs::write(pf.root.join("etc/master.cf"), master_cf).unwrap();
        std::fs::write(
            pf.root.join("etc/sasl/smtpd.conf"),
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n\
                 sasldb_path: {r}/etc/sasldb2\n"
            ),
        )
        .unwrap();
        for user in users {
            let (login, realm) = user.split_once('@').unwrap();
            let mut child = Command::new("saslpasswd2")
                .env_clear()
                .env("PATH", PATH)
                .arg("-f")
                .arg(pf.root.join("etc/sasldb2"))
                .args(["-p", "-c", "-u", realm, login])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(PASSWORD.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "saslpasswd2 {user}");
        }
        // smtpd (user postfix) reads the SASL database; the policy programs
        // (user nobody) write the counters; local delivery writes mailboxes.
        let mode = |p: &str, m| {
            std::fs::set_permissions(pf.root.join(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode("etc/sasldb2", 0o644);
        mode("spool", 0o1777);
        pf.chown("postfix", "data");
        pf.chown(RUN_AS, "overlimit");
        pf.limits(limits);
        let out = pf.postfix(&["start"]);
        assert!(
            out.status.success(),
            "postfix start: {}",
            pf.diagnostics(&out)
        );
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < WAIT,
                "smtpd never listened: {}",
                pf.maillog()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pf
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
        Command::new("/usr/sbin/postfix")
            .env_clear()
            .env("PATH", PATH)
            .arg("-c")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
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
        let started = Instant::now();
        while !self.maillog().contains("reload -- version") {
            assert!(started.elapsed() < WAIT, "no reload: {}", self.maillog());
            std::thread::sleep(Duration::from_millis(20));
        }
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
        let mut cmd = Command::new("swaks");
        cmd.env_clear()
            .env("PATH", PATH)
            .args(["--server", &format!("127.0.0.1:{}", self.port)])
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

    /// `postqueue -j`: one JSON object per queued message.
    pub fn queue(&self) -> String {
        let out = Command::new("postqueue")
            .env_clear()
            .env("PATH", PATH)
            .arg("-c")
            .arg(self.config())
            .arg("-j")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
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
        self.wait_until("queue empty", || self.queue().trim().is_empty());
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

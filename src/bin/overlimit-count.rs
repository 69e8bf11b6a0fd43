//! `overlimit-count [--client NAME] N`: counts N recipients of one local
//! message for the calling account, all or none, against the same control
//! file and counters as the SMTP plug-in.
//!
//! Installed setgid to group `overlimit`, the only group that may write the
//! counter directory; `sendmail-overlimit` runs it as the site's user. So it
//! does as little as it can: it takes the account from the real uid, checks a
//! requested name against `control/overlimit-senders`, counts, and answers
//! with an exit code and one line on stdout (the client's name when counted,
//! the reason when not). It never reads the message. Under that privilege it
//! trusts nothing the caller controls: the environment is cleared and the
//! fixed paths are used, and any internal error refuses the mail, since
//! passing it would let a site slip its limit by breaking the environment.

use overlimit::admit::{self, Admission, Full};
use overlimit::client::{printable, Client};
use overlimit::config::{Config, DEFAULT_CONTROL, DEFAULT_DIR};
use overlimit::error::Internal;
use overlimit::local::senders::{self, DEFAULT_SENDERS};
use overlimit::local::{identity, PERMFAIL, TEMPFAIL};
use overlimit::log;
use overlimit::lookup;
use overlimit::store::LOCK_WAIT;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

const NAME: &str = "overlimit-count";
const COUNTED: i32 = 0;
const USAGE: &str = "usage: overlimit-count [--client NAME] N

Counts N recipients of one message for the calling account (its real uid),
as sendmail-overlimit does before it sends. Exit 0 and the client's name on
stdout when counted; 111 (over the limit, or an internal error) or 100
(more recipients than a limit allows at all, a name the account may not
use, a usage error) and the reason when not.
See overlimit-count(8).";

/// Where and how to count. Under privilege these are fixed: a site could
/// otherwise point the program at a control file of its own.
struct Settings {
    control: PathBuf,
    dir: PathBuf,
    senders: PathBuf,
    monitor: bool,
    fail_closed: bool,
}

impl Settings {
    fn new(privileged: bool) -> Settings {
        if privileged {
            return Settings {
                control: DEFAULT_CONTROL.into(),
                dir: DEFAULT_DIR.into(),
                senders: DEFAULT_SENDERS.into(),
                monitor: false,
                fail_closed: true,
            };
        }
        let c = Config::from_env();
        let senders = std::env::var_os("OVERLIMIT_SENDERS").filter(|v| !v.is_empty());
        Settings {
            control: c.control,
            dir: c.dir,
            senders: senders.map_or_else(|| DEFAULT_SENDERS.into(), PathBuf::from),
            monitor: c.monitor,
            fail_closed: c.fail_closed,
        }
    }
}

/// The exit code and the one line of the answer.
struct Answer(i32, String);

/// Why counting stopped short of a decision.
enum Stop {
    Refused(Answer),
    Broken(Internal),
}

impl From<Internal> for Stop {
    fn from(e: Internal) -> Stop {
        Stop::Broken(e)
    }
}

fn main() {
    let started = Instant::now();
    let privileged = identity::privileged();
    let hardened = if privileged { harden() } else { Ok(()) };
    std::panic::set_hook(Box::new(|info| {
        log::line(NAME, &format!("internal error: {info}").replace('\n', " "));
    }));
    let settings = Settings::new(privileged);
    let fail_closed = settings.fail_closed;
    let Answer(code, line) = std::panic::catch_unwind(|| match hardened {
        Ok(()) => run(&settings, started),
        Err(e) => internal(&settings, &format!("uid {}", identity::real_uid()), e),
    })
    .unwrap_or_else(|_| {
        let code = if fail_closed { TEMPFAIL } else { COUNTED };
        Answer(code, "internal error (see above)".into())
    });
    println!("{line}");
    std::process::exit(code)
}

fn run(s: &Settings, started: Instant) -> Answer {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Request { asked, n } = match parse(&args) {
        Ok(Some(request)) => request,
        Ok(None) => return Answer(COUNTED, USAGE.into()),
        Err(why) => return Answer(PERMFAIL, format!("{why}\n{USAGE}")),
    };
    let client = match identify(s, asked.as_deref()) {
        Ok(c) => c,
        Err(Stop::Refused(a)) => return a,
        Err(Stop::Broken(e)) => return internal(s, &format!("uid {}", identity::real_uid()), e),
    };
    let name = printable(&client.name());
    match count(s, &client, n, started) {
        Ok(a) => a,
        Err(e) => internal(s, &name, e),
    }
}

/// What the command line asks for.
struct Request {
    /// `--client NAME`.
    asked: Option<Vec<u8>>,
    /// Recipients to count.
    n: u64,
}

/// `[--client NAME] N`; `Ok(None)` asks for help.
fn parse(args: &[OsString]) -> Result<Option<Request>, String> {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let (asked, rest) = match bytes.as_slice() {
        [b"--help" | b"-h", ..] => return Ok(None),
        [b"--client", name, rest @ ..] => (Some(name.to_vec()), rest),
        rest => (None, rest),
    };
    let n = match rest {
        [n] => std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse::<u64>().ok()),
        _ => None,
    };
    match n {
        Some(n) if n > 0 => Ok(Some(Request { asked, n })),
        _ => Err("expected a number of recipients, 1 or more".into()),
    }
}

/// The client to count: the account's default (`LOGIN@localhost`, or the
/// first name the administrator mapped it to), or the name it asked for if
/// the mapping allows it.
fn identify(s: &Settings, asked: Option<&[u8]>) -> Result<Client, Stop> {
    let uid = identity::real_uid();
    let Some(login) = identity::login(uid)? else {
        let why = format!("uid {uid} has no login name; refused");
        return Err(Stop::Refused(Answer(PERMFAIL, why)));
    };
    let mut notes = Vec::new();
    let mapped = senders::for_login(&s.senders, &login, &mut notes)?;
    for n in &notes {
        log::line(NAME, &format!("{}: {n}", s.senders.display()));
    }
    let Some(asked) = asked else {
        let name = mapped.default_name(&login);
        return Client::from_name(&name)
            .ok_or_else(|| Stop::Broken(Internal::other("empty client name")));
    };
    let refuse = |why: String| Stop::Refused(Answer(PERMFAIL, why));
    let client = Client::from_name(asked).ok_or_else(|| refuse("--client: empty name".into()))?;
    if !mapped.allows(&login, &client.name()) {
        return Err(refuse(format!(
            "{} may not send as {} (no line {}:{} in {})",
            printable(&login),
            printable(&client.name()),
            printable(&login),
            printable(&client.name()),
            s.senders.display()
        )));
    }
    Ok(client)
}

fn count(s: &Settings, client: &Client, n: u64, started: Instant) -> Result<Answer, Internal> {
    let mut notes = Vec::new();
    let resolved = lookup::resolve(&s.control, client, &mut notes);
    for note in &notes {
        log::line(NAME, &format!("{}: {note}", s.control.display()));
    }
    let targets = admit::targets(client, &resolved?);
    let now = overlimit::time::Time::now();
    let deadline = started + LOCK_WAIT;
    let result = admit::admit_n(&s.dir, &targets, now, deadline, s.monitor, n)?;
    for note in &result.notes {
        log::line(NAME, note);
    }
    let name = client.name();
    if result.accepted() {
        return Ok(Answer(COUNTED, printable(&name)));
    }
    let why = refusal(&name, &result, n, now);
    if s.monitor {
        log::line(NAME, &format!("monitor: would refuse {why}"));
        return Ok(Answer(COUNTED, printable(&name)));
    }
    // A message with more recipients than a limit allows at all never fits.
    let never = result.full.iter().any(|f| n > f.item.max);
    Ok(Answer(if never { PERMFAIL } else { TEMPFAIL }, why))
}

/// `web1@localhost: limit 100/1h reached (99 counted, 2 asked; room in 12m)`.
fn refusal(name: &[u8], result: &Admission, n: u64, now: overlimit::time::Time) -> String {
    let limits: Vec<String> = result
        .full
        .iter()
        .map(|f| describe(name, f, n, now))
        .collect();
    format!("{}: {}", printable(name), limits.join("; "))
}

fn describe(name: &[u8], f: &Full, n: u64, now: overlimit::time::Time) -> String {
    let whose = if f.label == name {
        String::new()
    } else {
        format!("{} ", printable(&f.label))
    };
    if n > f.item.max {
        return format!(
            "{whose}limit {} is below the message's {n} recipients",
            f.item
        );
    }
    let room = match f.room_at {
        Some(t) => format!("room in {}", overlimit::refusal::wait(now, t)),
        None => "until reset".to_string(),
    };
    format!(
        "{whose}limit {} reached ({} counted, {n} asked; {room})",
        f.item, f.count
    )
}

/// An internal error: refused (111) when failing closed, which is always the
/// case under privilege; else counted as passing, with a log line.
fn internal(s: &Settings, name: &str, e: Internal) -> Answer {
    if s.fail_closed {
        return Answer(TEMPFAIL, format!("{name}: internal error: {e}"));
    }
    log::line(
        NAME,
        &format!("internal error, message passes uncounted: {e}"),
    );
    Answer(COUNTED, name.to_string())
}

/// Puts the inherited process state a site controls back to something safe,
/// before anything else runs: descriptors 0-2 open (else a counter opened
/// later could become stderr), no environment, a umask that keeps counters
/// group-writable, and a file-size limit that cannot cut a counter's write
/// short (a torn counter would be started again, from zero).
fn harden() -> Result<(), Internal> {
    for fd in 0..3 {
        // SAFETY: fcntl and open on descriptor numbers and a literal path;
        // open returns the lowest free descriptor, which is `fd`.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    // SAFETY: single-threaded here; nothing holds pointers into the environment.
    unsafe {
        libc::clearenv();
        libc::umask(0o007);
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) == 0 && lim.rlim_cur != lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
        }
    }
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < 1 << 20 {
        return Err(Internal::other(format!(
            "file size limit of {} bytes is too low to write counters",
            lim.rlim_cur
        )));
    }
    Ok(())
}

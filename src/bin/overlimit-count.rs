//! `overlimit-count`: the one program that holds counter locks for local
//! mail. Installed `overlimit:overlimit` mode 6755, it becomes the
//! `overlimit` account wholly at start (see `local::privilege`), so the site
//! that runs it can neither signal, trace nor starve it while it counts.
//!
//! - `--submit`: counts exactly the recipient arguments, all or none, stamps
//!   the message with the caller's name and uid, and runs the
//!   administrator's real sendmail itself with an argument list it builds;
//!   when that cannot start or fails, the recipients are given back.
//! - `--queue N`: counts N recipients for the caller (qmail-queue-overlimit).
//!
//! Nothing the caller controls (environment, arguments but the request
//! itself) changes a path, the deliverer, monitor mode or failing closed:
//! any internal error refuses the mail.

use overlimit::admit::{self, Target};
use overlimit::client::{printable, Client};
use overlimit::config::{installed_store, DEFAULT_CONTROL, DEFAULT_DIR};
use overlimit::decision::{self, Asked, Decided};
use overlimit::error::Internal;
use overlimit::local::deliverer::{Ended, Invocation};
use overlimit::local::privilege::{self, Caller};
use overlimit::local::senders::{self, DEFAULT_SENDERS};
use overlimit::local::{
    address, deliverer, identity, memory_file, message, read_message, refusal, syslog,
};
use overlimit::local::{PERMFAIL, TEMPFAIL};
use overlimit::log;
use overlimit::lookup;
use overlimit::store::LOCK_WAIT;
use overlimit::time::Time;
use std::ffi::{CStr, OsString};
use std::io::{Seek, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::time::Instant;

const NAME: &str = "overlimit-count";
const IDENT: &CStr = c"overlimit-count";
const USAGE: &str =
    "usage: overlimit-count [--client NAME] --submit [-i] -f SENDER [-F FULLNAME] -- RCPT...
       overlimit-count --queue N

--submit counts the recipients for the calling account (its real uid), adds
X-Overlimit-Client to the message on stdin and hands it to the real sendmail;
--queue counts N recipients (for qmail-queue-overlimit). Exit 0 when counted
(and sent), 111 over a limit or a temporary error, 100 never (more than a
limit allows, a name not allowed, a usage error). See overlimit-count(8).";

/// Longest `-F` full name handed on.
const MAX_FULL_NAME: usize = 256;

fn main() {
    overlimit::local::answer_version(NAME);
    let caller = match privilege::enter() {
        Ok(c) => c,
        Err(why) => std::process::exit(refuse(TEMPFAIL, &format!("mail refused: {why}"))),
    };
    std::panic::set_hook(Box::new(|info| {
        log::line(NAME, &format!("internal error: {info}").replace('\n', " "));
    }));
    let code = std::panic::catch_unwind(|| run(caller)).unwrap_or(TEMPFAIL);
    std::process::exit(code)
}

/// One line on stderr (the caller's) and syslog; returns `code`.
fn refuse(code: i32, why: &str) -> i32 {
    log::line(NAME, why);
    syslog(IDENT, libc::LOG_WARNING, why);
    code
}

enum Request {
    Submit(Submit),
    Queue(u64),
    Help,
}

struct Submit {
    client: Option<Vec<u8>>,
    ignore_dots: bool,
    sender: Vec<u8>,
    full_name: Option<Vec<u8>>,
    recipients: Vec<Vec<u8>>,
}

fn run(caller: Caller) -> i32 {
    let args: Vec<Vec<u8>> = std::env::args_os()
        .skip(1)
        .map(OsString::into_vec)
        .collect();
    let request = match parse(&args) {
        Ok(r) => r,
        Err(why) => {
            log::line(NAME, &why);
            eprintln!("{USAGE}");
            return PERMFAIL;
        }
    };
    let (asked, n) = match &request {
        Request::Help => {
            println!("{USAGE}");
            return 0;
        }
        Request::Queue(n) => (None, *n),
        Request::Submit(s) => (s.client.as_deref(), s.recipients.len() as u64),
    };
    let who = match identify(caller.uid, asked) {
        Ok(w) => w,
        Err(Stop::Refused(code, why)) => {
            return refuse(code, &format!("refused uid {}: {why}", caller.uid))
        }
        Err(Stop::Broken(e)) => return internal(&format!("uid {}", caller.uid), e),
    };
    match request {
        Request::Submit(s) => submit(&who, caller, s),
        _ => queue(&who, n),
    }
}

/// `--queue N`: the answer on stdout, for qmail-queue-overlimit.
fn queue(who: &Who, n: u64) -> i32 {
    let name = printable(&who.client.name());
    match count(who, n) {
        Ok(Counted::Yes { .. }) => {
            println!("{name}");
            0
        }
        Ok(Counted::No(code, why)) => {
            println!("{why}");
            code
        }
        Err(e) => internal(&name, e),
    }
}

/// The strict argument lists; anything else is a usage error.
fn parse(args: &[Vec<u8>]) -> Result<Request, String> {
    let mut rest: &[Vec<u8>] = args;
    let mut client = None;
    match rest {
        [h] if h == b"--help" => return Ok(Request::Help),
        [q, n] if q == b"--queue" => {
            return match std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(n) if n > 0 => Ok(Request::Queue(n)),
                _ => Err("--queue needs a number of recipients, 1 or more".into()),
            }
        }
        [c, name, tail @ ..] if c == b"--client" => {
            client = Some(name.clone());
            rest = tail;
        }
        _ => {}
    }
    let [submit, tail @ ..] = rest else {
        return Err("expected --submit or --queue".into());
    };
    if submit != b"--submit" {
        return Err("expected --submit or --queue".into());
    }
    rest = tail;
    let ignore_dots = rest.first().is_some_and(|a| a == b"-i");
    if ignore_dots {
        rest = &rest[1..];
    }
    let [f, sender, tail @ ..] = rest else {
        return Err("--submit needs -f SENDER".into());
    };
    if f != b"-f" {
        return Err("--submit needs -f SENDER".into());
    }
    rest = tail;
    let mut full_name = None;
    if let [flag, name, tail @ ..] = rest {
        if flag == b"-F" {
            if name.len() > MAX_FULL_NAME || name.iter().any(|&b| b < 0x20 || b == 0x7f) {
                return Err("-F: a full name without control bytes, at most 256 bytes".into());
            }
            full_name = Some(name.clone());
            rest = tail;
        }
    }
    let [dashes, recipients @ ..] = rest else {
        return Err("expected -- and the recipients".into());
    };
    if dashes != b"--" || recipients.is_empty() {
        return Err("expected -- and the recipients".into());
    }
    if !sender.is_empty() && !address::atomic(sender) {
        return Err(format!(
            "-f: \"{}\" is not one plain address",
            printable(sender)
        ));
    }
    if let Some(bad) = recipients.iter().find(|r| !address::atomic(r)) {
        return Err(format!(
            "recipient \"{}\" is not one plain address",
            printable(bad)
        ));
    }
    Ok(Request::Submit(Submit {
        client,
        ignore_dots,
        sender: sender.clone(),
        full_name,
        recipients: recipients.to_vec(),
    }))
}

/// Who is counted: the login of the real uid, and the client it counts as.
struct Who {
    login: Vec<u8>,
    uid: u32,
    client: Client,
    /// The counter may be another's too (a mapped or requested name): a
    /// refusal then shows none of its numbers to the caller.
    shared: bool,
}

enum Stop {
    Refused(i32, String),
    Broken(Internal),
}

impl From<Internal> for Stop {
    fn from(e: Internal) -> Stop {
        Stop::Broken(e)
    }
}

fn identify(uid: u32, asked: Option<&[u8]>) -> Result<Who, Stop> {
    let Some(login) = identity::login(uid)? else {
        return Err(Stop::Refused(
            PERMFAIL,
            "no login name in /etc/passwd".into(),
        ));
    };
    let path = Path::new(DEFAULT_SENDERS);
    let mut notes = Vec::new();
    let mapped = senders::for_login(path, &login, &mut notes)?;
    for n in &notes {
        log::line(NAME, &format!("{}: {n}", path.display()));
    }
    let name = match asked {
        None => mapped.default_name(&login),
        Some(asked) => {
            let c = Client::from_name(asked)
                .ok_or_else(|| Stop::Refused(PERMFAIL, "--client: empty name".into()))?;
            if !mapped.allows(&login, &c.name()) {
                let (l, n) = (printable(&login), printable(&c.name()));
                let why = format!(
                    "{l} may not send as {n} (no line {l}:{n} in {})",
                    path.display()
                );
                return Err(Stop::Refused(PERMFAIL, why));
            }
            c.name()
        }
    };
    let client = Client::from_name(&name).ok_or_else(|| Internal::other("empty client name"))?;
    let shared = mapped.mapped() || client.name() != identity::default_client(&login);
    Ok(Who {
        login,
        uid,
        client,
        shared,
    })
}

enum Counted {
    /// Counted at `at` on `targets`: what a refund gives back.
    Yes { targets: Vec<Target>, at: Time },
    /// The exit code and the caller's line.
    No(i32, String),
}

fn count(who: &Who, n: u64) -> Result<Counted, Internal> {
    let control = Path::new(DEFAULT_CONTROL);
    let at = Time::now();
    let asked = Asked {
        client: &who.client,
        control,
        dir: Path::new(DEFAULT_DIR),
        n,
        now: at,
        deadline: Instant::now() + LOCK_WAIT,
        monitor: false,
    };
    let Decided { result, targets } = decision::decide(
        &asked,
        |notes| lookup::resolve(control, &who.client, notes),
        &mut installed_store()?,
        &mut |m| log::line(NAME, m),
    )?;
    if result.accepted() {
        return Ok(Counted::Yes { targets, at });
    }
    let name = printable(&who.client.name());
    let own = who.client.name();
    let full = refusal::describe(&result, &own, who.shared, n, at, false);
    syslog(
        IDENT,
        libc::LOG_WARNING,
        &format!("refused {name} (uid {}): {full}", who.uid),
    );
    let never = result.full.iter().any(|f| n > f.item.max);
    let code = if never { PERMFAIL } else { TEMPFAIL };
    Ok(Counted::No(
        code,
        format!(
            "refused {name}: {}",
            refusal::describe(&result, &own, who.shared, n, at, true)
        ),
    ))
}

/// An internal error refuses the mail: on this path nothing passes uncounted.
fn internal(name: &str, e: Internal) -> i32 {
    refuse(
        TEMPFAIL,
        &format!("{name}: internal error, mail refused: {e}"),
    )
}

/// Counts the recipients, then hands the stamped message to the deliverer.
fn submit(who: &Who, caller: Caller, s: Submit) -> i32 {
    let name = printable(&who.client.name());
    let prepared = prepare(who, caller, &s);
    let (call, file, subject) = match prepared {
        Ok(p) => p,
        Err(Stop::Refused(code, why)) => return refuse(code, &format!("{why}; nothing sent")),
        Err(Stop::Broken(e)) => return internal(&name, e),
    };
    let n = s.recipients.len() as u64;
    let (targets, at) = match count(who, n) {
        Ok(Counted::Yes { targets, at }) => (targets, at),
        Ok(Counted::No(code, why)) => {
            log::line(NAME, &why);
            return code;
        }
        Err(e) => return internal(&name, e),
    };
    let what = format!(
        "uid {}, {n} recipient{}, {subject}",
        caller.uid,
        if n == 1 { "" } else { "s" }
    );
    let code = match call.run(file) {
        Ok(Ended::Exited(code)) => code,
        Err(e) => {
            log::line(NAME, &e.to_string());
            TEMPFAIL
        }
        // It may have queued: the count stays (never a refund for mail sent).
        Ok(Ended::Unknown(why)) => {
            let program = call.program.display();
            return refuse(
                TEMPFAIL,
                &format!("{program}: {why}; {name}: {what}, counted (it may have been sent)"),
            );
        }
    };
    if code == 0 {
        syslog(IDENT, libc::LOG_INFO, &format!("counted {name}: {what}"));
        return 0;
    }
    // Nothing counted when nothing was sent.
    let deadline = Instant::now() + LOCK_WAIT;
    let refunded =
        installed_store().and_then(|mut s| admit::refund(&mut s, &targets, at, n, deadline));
    let back = match refunded {
        Ok(()) => "given back".to_string(),
        Err(e) => format!("not given back: {e}"),
    };
    refuse(
        code,
        &format!(
            "{} failed (exit {code}); {name}: {what}, {back}",
            call.program.display()
        ),
    )
}

type Prepared = (Invocation, std::fs::File, String);

/// Everything that can fail before counting: the deliverer, the message, the
/// argument list. A message that cannot be sent is never counted.
fn prepare(who: &Who, caller: Caller, s: &Submit) -> Result<Prepared, Stop> {
    let program = deliverer::resolve(Path::new(deliverer::CONTROL))?;
    overlimit::local::executable(&program)?;
    let msg = read_message().map_err(|(code, why)| Stop::Refused(code, why))?;
    let subject = match message::subject(&msg) {
        Some(s) => {
            let mut s = printable(&s);
            s.truncate(200);
            format!("subject \"{s}\"")
        }
        None => "no subject".into(),
    };
    // The trace an abuse desk follows: the queue sees only `overlimit`. A
    // stamp the caller wrote itself goes first.
    let end = String::from_utf8_lossy(message::line_end(&msg)).into_owned();
    let stamp = format!(
        "X-Overlimit-Client: {} (uid {}){end}",
        printable(&who.client.name()),
        caller.uid
    );
    let msg = message::with_field_on_top(
        &message::without(&msg, &["x-overlimit-client"]),
        stamp.as_bytes(),
    );
    let mut file = memory_file(c"overlimit-count")
        .map_err(|e| Internal::other(format!("cannot buffer the message: {e}")))?;
    file.write_all(&msg)
        .and_then(|()| file.rewind())
        .map_err(|e| Internal::other(format!("cannot buffer the message: {e}")))?;
    let call = Invocation::new(
        program,
        s.ignore_dots,
        &s.sender,
        s.full_name.as_deref(),
        &s.recipients,
        &who.login,
    );
    call.fits()?;
    Ok((call, file, subject))
}

//! The answer to one request: the front end's whole job, over the same
//! engine decision as rcptcheck-overlimit (`decision::decide`), so both
//! programs count one client on one counter under one limit.

use super::cache::Cache;
use super::logger::Logger;
use super::reply::{refusal_log, refusal_text, Action, DUNNO, TEMPORARY_ERROR};
use super::request::Request;
use crate::admit::Full;
use crate::backend::Pool;
use crate::client::Client;
use crate::config::Config;
use crate::decision::{self, Asked};
use crate::error::Internal;
use crate::store::LOCK_WAIT;
use std::ffi::OsStr;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Everything read once at start: the environment does not change under a
/// running daemon. The control file is not among it: every request checks
/// it for changes (see `cache`), so an edit (or a new cdb) counts at once.
pub struct Settings {
    pub config: Config,
    pub action: Action,
    pub logger: Logger,
    pub lookups: Cache,
    pub turns: Turns,
    /// Where the counters are; a server's connections are kept.
    pub stores: Pool,
}

/// Requests for one client take turns inside the daemon before they reach
/// its counter's flock. Two threads of one process contending for a flock
/// cost a new lock-waiting thread each time (`store::lock`); a mutex hands
/// the turn over inside the process, and the flock is then contended only
/// by other processes (the plug-in, the sweep). Striped by the hash of the
/// client's name: a fixed table, whatever the clients.
pub struct Turns([Mutex<()>; 256]);

impl Default for Turns {
    fn default() -> Turns {
        Turns(std::array::from_fn(|_| Mutex::new(())))
    }
}

impl Turns {
    /// The turn of `name`; held while its counters are read and written.
    /// A thread that waits here for a thread that waits for a flock still
    /// answers within the lock deadline, counted from its own start: by then
    /// its own flock attempt finds the deadline passed.
    fn take(&self, name: &[u8]) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        name.hash(&mut h);
        let stripe = &self.0[h.finish() as usize % self.0.len()];
        stripe.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Settings {
    /// From the environment; an OVERLIMIT_POLICY_ACTION it does not know is
    /// an error, so a typo never silently becomes the default.
    pub fn from_env(logger: Logger) -> Result<Settings, String> {
        let action = std::env::var_os("OVERLIMIT_POLICY_ACTION");
        let config = Config::from_env();
        let stores = Pool::new(&config.dir, config.redis.as_deref()).map_err(|e| e.to_string())?;
        Ok(Settings {
            config,
            stores,
            action: Action::parse(action.as_deref().map(OsStr::as_bytes))?,
            logger,
            lookups: Cache::default(),
            turns: Turns::default(),
        })
    }
}

/// The `action=` value for `request`. Only RCPT counts; every other state has
/// no opinion. Never panics: a panic is an internal error like any other.
pub fn answer(settings: &Settings, request: &Request) -> String {
    if !request.is_recipient() {
        return DUNNO.to_string();
    }
    let started = Instant::now();
    match catch_unwind(AssertUnwindSafe(|| count(settings, request, started))) {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => internal_error(settings, &e.to_string()),
        Err(_) => internal_error(settings, "panic (see the line before)"),
    }
}

/// Counts one recipient for the request's client, or refuses it.
fn count(settings: &Settings, request: &Request, started: Instant) -> Result<String, Internal> {
    let Settings {
        config,
        action,
        logger,
        lookups,
        turns,
        stores,
    } = settings;
    let name = if request.sasl_username.is_empty() {
        &request.client_address
    } else {
        &request.sasl_username
    };
    let client = Client::from_name(name).ok_or_else(|| {
        Internal::other("no client: the request has neither sasl_username nor client_address")
    })?;
    let now = crate::time::Time::now();
    let asked = Asked::one(config, &client, now, started + LOCK_WAIT);
    let turn = turns.take(&client.name());
    let result = stores
        .with(|store| {
            decision::decide(
                &asked,
                |notes| lookups.resolve(&config.control, &client, notes),
                store,
                &mut |m| logger.line(m),
            )
        })?
        .result;
    drop(turn);
    if result.accepted() {
        return Ok(DUNNO.to_string());
    }
    let name = client.name();
    let refusal = action.answer(&refusal_text(&name, &result, now));
    logger.line(&refusal_log(
        &name,
        &result,
        now,
        &request.recipient,
        &refusal,
        config.monitor,
    ));
    if let Some(program) = &config.notify {
        notify(program, &result.newly_full, *logger);
    }
    Ok(if config.monitor {
        DUNNO.to_string()
    } else {
        refusal
    })
}

/// Fail open (DUNNO, the recipient passes uncounted) or, under
/// OVERLIMIT_FAILCLOSED, a temporary refusal; either way one log line.
fn internal_error(settings: &Settings, cause: &str) -> String {
    let (answer, what) = if settings.config.fail_closed {
        (TEMPORARY_ERROR, "answering 451")
    } else {
        (DUNNO, "recipient passes uncounted")
    };
    settings
        .logger
        .line(&format!("internal error, {what}: {cause}"));
    answer.to_string()
}

/// Starts OVERLIMIT_NOTIFY once per newly full limit, with the arguments
/// rcptcheck-overlimit gives it (label, limit, count, room-at or `reset`).
/// It is not waited for here: a thread reaps it, so a daemon collects no
/// zombies. Its output never reaches the policy socket.
fn notify(program: &OsStr, newly_full: &[Full], logger: Logger) {
    for f in newly_full {
        let room = f
            .room_at
            .map_or_else(|| "reset".to_string(), |t| t.secs_up().to_string());
        let stderr = match logger {
            Logger::Stderr => Stdio::inherit(),
            Logger::Syslog => Stdio::null(),
        };
        let spawned = Command::new(program)
            .arg(OsStr::from_bytes(&f.label))
            .arg(f.item.to_string())
            .arg(f.count.to_string())
            .arg(room)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn();
        match spawned {
            Ok(mut child) => {
                let _ = std::thread::Builder::new().spawn(move || child.wait());
            }
            Err(e) => logger.line(&format!(
                "cannot start OVERLIMIT_NOTIFY {}: {e}",
                program.to_string_lossy()
            )),
        }
    }
}

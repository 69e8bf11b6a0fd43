//! Where counters live: files in the counter directory (the default, for
//! one host) or a Redis server (`OVERLIMIT_REDIS`, for several). Both hold
//! the same text (see `counter.rs`) and are changed the same way: the caller
//! gets what is stored at its counters, decides in Rust, and returns one
//! change per counter, applied to all of them or to none. So the window
//! arithmetic and the decision exist once, and the two backends differ only
//! in how "all or none, against every other process" is had: `flock` on
//! every file, or a `WATCH`ed transaction (see `redis/counters.rs`).
//!
//! Counters are named by their file name in both: a Redis key is made from
//! it and gives it back.

mod fallback;
mod files;

pub use fallback::Fallback;

use crate::counter::Counter;
use crate::error::Internal;
use crate::limits::Limits;
use crate::redis::{counters as shared, Conn, Server};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What was found at one counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// No such counter: a new Redis key, or a file where none is created
    /// (the sweep, `reset`). A decision counts it as empty.
    Missing,
    /// Something that is not a counter's text.
    Damaged,
    Counter(Counter),
}

/// When a counter written expires (Redis only: a file waits for the sweep).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// This long from now.
    After(Duration),
    /// Only by the sweep.
    Never,
    /// As before this write (`KEEPTTL`): for the sweep, which does not know
    /// the counter's limits.
    AsBefore,
}

impl Expiry {
    /// How long a counter with `limits` lives after its last rise: until the
    /// sweep while a classic limit (or no limit at all) keeps its count;
    /// otherwise the longest window plus one bucket, since a window counts a
    /// recipient until its bucket's end plus the period.
    pub fn for_limits(limits: &Limits) -> Expiry {
        if limits.items.iter().any(|i| i.period.is_none()) {
            return Expiry::Never;
        }
        match limits.periods().into_iter().max() {
            None => Expiry::Never,
            Some(longest) => {
                let w = crate::window::Window::new(longest);
                Expiry::After(Duration::from_millis(w.period_millis() + w.width()))
            }
        }
    }
}

/// What becomes of one counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Keep,
    Set(Counter, Expiry),
    Delete,
}

/// Whether a missing counter is created (a decision) or left missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    Create,
    Existing,
}

/// The counters, wherever they live.
pub enum Store {
    Files(PathBuf),
    Redis(Box<Shared>),
}

/// A Redis server, connected on first use and again after a failure; a
/// long-running program (the policy service) keeps the connection.
pub struct Shared {
    server: Server,
    conn: Option<Conn>,
    /// The local counter directory, for the outage fallback.
    dir: PathBuf,
    /// The last step failed because the server could not be reached.
    outage: bool,
}

impl Store {
    /// Files in `dir`, or the server `redis` names (`OVERLIMIT_REDIS`).
    pub fn open(dir: &Path, redis: Option<&str>) -> Result<Store, Internal> {
        Ok(match redis {
            None => Store::Files(dir.to_path_buf()),
            Some(url) => Store::Redis(Box::new(Shared {
                server: Server::parse(url)?,
                conn: None,
                dir: dir.to_path_buf(),
                outage: false,
            })),
        })
    }

    /// Where counter `file` is, for messages.
    pub fn place(&self, file: &str) -> String {
        match self {
            Store::Files(dir) => dir.join(file).display().to_string(),
            Store::Redis(s) => format!(
                "redis {} {}",
                s.server.shown(),
                String::from_utf8_lossy(&shared::key(file))
            ),
        }
    }

    /// Runs `decide` on what is at `files` and applies the changes it
    /// returns (one per file), all or none. `decide` may run more than once
    /// (Redis retries after a conflict) and must act only through its result.
    pub fn update<R>(
        &mut self,
        files: &[String],
        open: Open,
        deadline: Instant,
        decide: impl FnMut(Vec<Found>) -> Result<(R, Vec<Change>), Internal>,
    ) -> Result<R, Internal> {
        match self {
            Store::Files(dir) => files::update(dir, files, open, deadline, decide),
            // A missing key is found `Missing` either way; creating it is
            // the caller's `Set`.
            Store::Redis(s) => {
                let keys: Vec<Vec<u8>> = files.iter().map(|f| shared::key(f)).collect();
                s.with(deadline, |conn| shared::transact(conn, &keys, decide))
            }
        }
    }

    /// Every counter's file name, sorted.
    pub fn files(&mut self, deadline: Instant) -> Result<Vec<String>, Internal> {
        match self {
            Store::Files(dir) => crate::sweep::counter_files(dir),
            Store::Redis(s) => s.with(deadline, |conn| {
                let keys = shared::all_keys(conn)?;
                let mut files: Vec<String> = keys
                    .iter()
                    .filter_map(|k| shared::file_of(k))
                    .filter_map(|f| String::from_utf8(f.to_vec()).ok())
                    .collect();
                files.sort();
                Ok(files)
            }),
        }
    }

    /// One counter, read and released; `None` when there is none, an error
    /// when it is not a counter.
    pub fn read(&mut self, file: &str, deadline: Instant) -> Result<Option<Counter>, Internal> {
        match self {
            Store::Files(dir) => files::read(dir, file, deadline),
            Store::Redis(s) => s.with(deadline, |conn| shared::read(conn, &shared::key(file))),
        }
    }
}

impl Shared {
    /// Runs `step` on the connection, opened if need be, by `deadline`; a
    /// connection that failed is dropped, its state unknown.
    fn with<R>(
        &mut self,
        deadline: Instant,
        step: impl FnOnce(&mut Conn) -> Result<R, Internal>,
    ) -> Result<R, Internal> {
        self.outage = false;
        let conn = match &mut self.conn {
            Some(c) => {
                c.set_deadline(self.server.deadline(deadline));
                c
            }
            None => {
                // Only a failure of the connection itself is an outage: a
                // server that refuses the password answers (in `step`).
                let fresh = match self.connect(deadline) {
                    Ok(c) => c,
                    Err(e) => {
                        self.outage = true;
                        return Err(e);
                    }
                };
                self.conn.insert(fresh)
            }
        };
        let result = step(conn);
        if result.is_err() {
            self.outage = conn.broken();
            self.conn = None;
        }
        result
    }

    /// A fresh connection, its `AUTH` and `SELECT` deferred to the first
    /// command.
    fn connect(&self, deadline: Instant) -> Result<Conn, Internal> {
        let mut fresh = Conn::connect(&self.server, deadline)?;
        fresh.hello(&self.server);
        Ok(fresh)
    }
}

/// Stores for a program of many threads (the policy service): each request
/// takes an idle one, or opens one, and gives it back, so connections to a
/// server are kept and never shared by two requests at once.
pub struct Pool {
    dir: PathBuf,
    redis: Option<String>,
    idle: std::sync::Mutex<Vec<Store>>,
}

/// Connections kept idle at most: more threads open more, and drop them.
const POOL_KEEP: usize = 32;

impl Pool {
    /// Checks the address at once, so a mistake stops the program at start.
    pub fn new(dir: &Path, redis: Option<&str>) -> Result<Pool, Internal> {
        let first = Store::open(dir, redis)?;
        Ok(Pool {
            dir: dir.to_path_buf(),
            redis: redis.map(str::to_string),
            idle: std::sync::Mutex::new(vec![first]),
        })
    }

    /// Runs `step` on a store of the pool's own.
    pub fn with<R>(
        &self,
        step: impl FnOnce(&mut Store) -> Result<R, Internal>,
    ) -> Result<R, Internal> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut store = match idle {
            Some(s) => s,
            None => Store::open(&self.dir, self.redis.as_deref())?,
        };
        let result = step(&mut store);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_KEEP {
            idle.push(store);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Item;

    #[test]
    fn only_counters_of_windows_alone_expire() {
        let limits = |items: &[(u64, Option<u32>)]| Limits {
            items: items
                .iter()
                .map(|&(max, period)| Item { max, period })
                .collect(),
        };
        assert_eq!(Expiry::for_limits(&limits(&[])), Expiry::Never);
        assert_eq!(
            Expiry::for_limits(&limits(&[(10, Some(60)), (100, None)])),
            Expiry::Never
        );
        assert_eq!(
            Expiry::for_limits(&limits(&[(10, Some(60)), (100, Some(3600))])),
            Expiry::After(Duration::from_millis(3_600_000 + 60_000))
        );
    }
}

//! What a counter file holds, and its on-disk text.
//!
//! The file is rewritten in place by one `pwrite` at offset 0 and then
//! truncated; the text ends with `end` and a checksum, and anything after that
//! line is ignored. A kill between the two calls therefore leaves a valid
//! file, and a write of one page cannot be torn by a signal.
//!
//! The text, version 2 (times in milliseconds, see `window.rs`):
//!
//! ```text
//! overlimit 2
//! client web1@example.com
//! total 42
//! refused 3 1700000000          (refused attempts, when the last was: seconds)
//! notified 1/3600 1000          (the limits whose going over was reported)
//! blocked 1700086400 hacked     (optional: `overlimit block`, until when in
//!                                seconds, 0 for no end; the reason)
//! window 3600 28333333 4 0 7    (period in s, index of the first bucket, counts)
//! end 1a2b3c4d
//! ```
//!
//! Older files still read, so an upgrade keeps everyone's count: the seed
//! script's files of `X`s (a classic count equal to the size), and version 1,
//! whose buckets were whole seconds; each of its buckets is read as if all
//! its recipients came at its last instant, which errs strict.

use crate::client::printable;
use crate::limits::{parse_number, Item};
use crate::time::Time;
pub use crate::window::Window;
use crate::window::{BUCKETS, MAX_KEPT};

/// Counter files larger than this can only be the seed script's `X` files.
pub const READ_LIMIT: usize = 64 * 1024;
/// Client names stored in a counter are cut to this many bytes.
const NAME_LIMIT: usize = 255;
/// The most limits one counter remembers having reported. A line may hold
/// any number of classic items; past this many, more are not reported.
pub const MAX_NOTIFIED: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// The client (or `@domain`) this counter belongs to, for `status`.
    pub client: Vec<u8>,
    /// Recipients accepted since the last sweep: the classic count.
    pub total: u64,
    /// Recipients refused since the last sweep.
    pub refused: u64,
    /// When the last one was refused (Unix seconds; 0: never).
    pub last_refused: u64,
    /// The limits the administrator was told this counter went over, each
    /// until it has room again: one notification per limit and episode.
    pub notified: Vec<Item>,
    /// `overlimit block`: refused whatever the limits say, until it ends.
    pub block: Option<Block>,
    pub windows: Vec<Window>,
}

/// The administrator's stop on one counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Block {
    /// Unix seconds at which it ends by itself; 0: only `overlimit unblock`.
    pub until: u64,
    /// Why, as the administrator wrote it (printable, at most `REASON_LIMIT`).
    pub reason: String,
}

/// A block's reason is cut to this many bytes: it goes into a reply line.
pub const REASON_LIMIT: usize = 200;

impl Block {
    /// Whether it still holds at `now` (Unix seconds).
    pub fn holds(&self, now: u64) -> bool {
        self.until == 0 || now < self.until
    }
}

impl Counter {
    /// The window for `period`, created empty if the counter has none yet.
    pub fn window_mut(&mut self, period: u32) -> &mut Window {
        let i = match self.windows.iter().position(|w| w.period == period) {
            Some(i) => i,
            None => {
                self.windows.push(Window::new(period));
                self.windows.len() - 1
            }
        };
        &mut self.windows[i]
    }

    pub fn window(&self, period: u32) -> Option<&Window> {
        self.windows.iter().find(|w| w.period == period)
    }

    /// Keeps exactly the windows of `periods`, each expired to `now`.
    pub fn keep_windows(&mut self, periods: &[u32], now: Time) {
        self.windows.retain(|w| periods.contains(&w.period));
        for &p in periods {
            self.window_mut(p);
        }
        self.windows.sort_by_key(|w| w.period);
        for w in &mut self.windows {
            w.expire(now);
        }
    }

    /// True when nothing is left to remember.
    pub fn is_empty(&self) -> bool {
        self.total == 0
            && self.refused == 0
            && self.block.is_none()
            && self.windows.iter().all(|w| w.counts.is_empty())
    }

    /// Reads a counter file's bytes; `size` is the file's length, which may
    /// exceed `bytes` for a seed-script file of `X`s.
    pub fn parse(bytes: &[u8], size: u64) -> Option<Counter> {
        if bytes.iter().all(|&b| b == b'X') {
            return Some(Counter {
                total: size,
                ..Counter::default()
            });
        }
        parse_text(bytes)
    }

    /// The file's text (version 2); `parse` reads it back.
    pub fn to_text(&self) -> Vec<u8> {
        use std::fmt::Write;
        let name = &self.client[..self.client.len().min(NAME_LIMIT)];
        let mut t = format!(
            "overlimit 2\nclient {}\ntotal {}\nrefused {} {}\nnotified",
            printable(name),
            self.total,
            self.refused,
            self.last_refused,
        );
        for i in &self.notified {
            let _ = match i.period {
                None => write!(t, " {}", i.max),
                Some(p) => write!(t, " {}/{p}", i.max),
            };
        }
        t.push('\n');
        if let Some(b) = &self.block {
            let _ = writeln!(t, "blocked {} {}", b.until, printable(b.reason.as_bytes()));
        }
        for w in &self.windows {
            let _ = write!(t, "window {} {}", w.period, w.first);
            for c in &w.counts {
                let _ = write!(t, " {c}");
            }
            t.push('\n');
        }
        let sum = checksum(t.as_bytes());
        let _ = writeln!(t, "end {sum:08x}");
        t.into_bytes()
    }
}

/// FNV-1a, 32 bits: enough to notice a torn or hand-damaged file.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn parse_text(bytes: &[u8]) -> Option<Counter> {
    let text = std::str::from_utf8(bytes).ok()?;
    let end = text.find("\nend ")? + 1;
    let (body, tail) = text.split_at(end);
    let sum = tail.get(4..12)?;
    if tail.as_bytes().get(12) != Some(&b'\n')
        || u32::from_str_radix(sum, 16).ok()? != checksum(body.as_bytes())
    {
        return None;
    }
    let mut lines = body.lines().peekable();
    let version = match lines.next()? {
        "overlimit 1" => 1,
        "overlimit 2" => 2,
        _ => return None,
    };
    let mut c = Counter {
        client: unescape(lines.next()?.strip_prefix("client ")?)?,
        ..Counter::default()
    };
    c.total = number(lines.next()?.strip_prefix("total ")?)?;
    let mut refused = lines.next()?.strip_prefix("refused ")?.split(' ');
    c.refused = number(refused.next()?)?;
    c.last_refused = number(refused.next()?)?;
    let notified = lines.next()?.strip_prefix("notified")?;
    if version == 2 {
        if !notified.is_empty() && !notified.starts_with(' ') {
            return None;
        }
        for item in notified.split(' ').skip(1) {
            c.notified.push(notified_item(item)?);
        }
        if c.notified.len() > MAX_NOTIFIED {
            return None;
        }
    } else {
        // Version 1 had one flag per period, which is how two limits of one
        // period came to share it; at worst one more notification.
        flag(notified.strip_prefix(' ')?)?;
    }
    if let Some(block) = lines.next_if(|l| l.starts_with("blocked ")) {
        let (until, reason) = block["blocked ".len()..].split_once(' ')?;
        let reason = String::from_utf8(unescape(reason)?).ok()?;
        c.block = Some(Block {
            until: number(until)?,
            reason,
        });
    }
    for line in lines {
        let mut f = line.strip_prefix("window ")?.split(' ');
        let period = u32::try_from(number(f.next()?)?).ok()?;
        let first = number(f.next()?)?;
        if version == 1 {
            flag(f.next()?)?;
        }
        let counts = f.map(number).collect::<Option<Vec<u64>>>()?;
        if period == 0 || counts.len() > MAX_KEPT || c.window(period).is_some() {
            return None;
        }
        c.windows.push(if version == 1 {
            from_seconds(period, first, &counts)
        } else {
            Window {
                period,
                first,
                counts,
            }
        });
    }
    Some(c)
}

/// A version 1 window: buckets of `ceil(period/60)` whole seconds, `first`
/// the index of the first. Each bucket's recipients go to the new bucket
/// holding its last millisecond.
fn from_seconds(period: u32, first: u64, counts: &[u64]) -> Window {
    let old_width = u64::from(period.div_ceil(BUCKETS as u32).max(1)) * 1000;
    let mut w = Window::new(period);
    for (i, &n) in counts.iter().enumerate() {
        let end = first
            .saturating_add(i as u64 + 1)
            .saturating_mul(old_width)
            .saturating_sub(1);
        w.put(w.bucket(Time::from_millis(end)), n);
    }
    w
}

/// `1000` (a classic limit) or `100/3600` (a window of 3600 s).
fn notified_item(s: &str) -> Option<Item> {
    let (max, period) = match s.split_once('/') {
        Some((m, p)) => (m, Some(u32::try_from(number(p)?).ok()?)),
        None => (s, None),
    };
    Some(Item {
        max: number(max)?,
        period,
    })
}

/// A decimal number as `to_text` writes it: digits only, up to `u64::MAX`.
fn number(s: &str) -> Option<u64> {
    if s.len() <= 18 {
        return parse_number(s.as_bytes());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    None
}

fn flag(s: &str) -> Option<bool> {
    match s {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Reverses `printable`.
fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
            if b.get(i + 1) != Some(&b'x') {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 file as the previous release wrote it.
    fn version_1(body: &str) -> Vec<u8> {
        let body = format!("overlimit 1\n{body}");
        format!("{body}end {:08x}\n", checksum(body.as_bytes())).into_bytes()
    }

    #[test]
    fn text_round_trips_and_ignores_a_tail() {
        let mut c = Counter {
            client: b"odd name\n\xff".to_vec(),
            total: u64::MAX,
            refused: 2,
            last_refused: 1_700_000_000,
            notified: vec![
                Item {
                    max: 1,
                    period: Some(3600),
                },
                Item {
                    max: 10,
                    period: None,
                },
            ],
            ..Counter::default()
        };
        c.window_mut(3600).add(Time::from_secs(1_700_000_000), 3);
        let mut text = c.to_text();
        assert_eq!(Counter::parse(&text, text.len() as u64), Some(c.clone()));
        text.extend_from_slice(b"XXXX garbage left by a kill before truncate");
        assert_eq!(Counter::parse(&text, text.len() as u64), Some(c));
    }

    #[test]
    fn a_block_round_trips_and_files_without_one_still_read() {
        let mut c = Counter {
            client: b"web1@example.com".to_vec(),
            block: Some(Block {
                until: 1_700_086_400,
                reason: "hacked \\ \"site\" j\u{fc}rgen".into(),
            }),
            ..Counter::default()
        };
        c.window_mut(60).add(Time::from_secs(1_700_000_000), 1);
        let text = c.to_text();
        assert!(String::from_utf8_lossy(&text).contains("\nblocked 1700086400 hacked "));
        assert_eq!(Counter::parse(&text, text.len() as u64), Some(c.clone()));
        c.block = None;
        let text = c.to_text();
        assert!(!String::from_utf8_lossy(&text).contains("blocked"));
        assert_eq!(Counter::parse(&text, text.len() as u64), Some(c));
    }

    #[test]
    fn damaged_text_is_refused() {
        let text = Counter::default().to_text();
        let mut bad = text.clone();
        bad[20] ^= 1;
        assert_eq!(Counter::parse(&bad, bad.len() as u64), None);
        assert_eq!(Counter::parse(&text[..text.len() - 3], 0), None);
    }

    #[test]
    fn seed_script_files_count_their_size() {
        assert_eq!(Counter::parse(b"XXX", 3).unwrap().total, 3);
        assert_eq!(Counter::parse(b"", 0).unwrap().total, 0);
        assert_eq!(Counter::parse(b"XXXX", 100_000).unwrap().total, 100_000);
    }

    #[test]
    fn a_version_1_file_keeps_its_counts_and_errs_strict() {
        // 3 recipients in the 1 h window's bucket 28333333 (60 s wide, so
        // seconds 1_699_999_980 ..= 1_700_000_039), 2 in the next.
        let text = version_1(
            "client web1@example.com\ntotal 9\nrefused 1 1700000000\nnotified 1\n\
             window 3600 28333333 0 3 2\n",
        );
        let mut c = Counter::parse(&text, text.len() as u64).unwrap();
        assert_eq!(
            (c.total, c.refused, c.client.as_slice()),
            (9, 1, &b"web1@example.com"[..])
        );
        c.keep_windows(&[3600], Time::from_secs(1_700_000_100));
        let w = c.window(3600).unwrap();
        assert_eq!(w.count(), 5);
        // Room for a fourth only once the bucket's last second is an hour old.
        let free = w.room_at(5).unwrap();
        assert!(free >= Time::from_secs(1_700_000_040 + 3600), "{free:?}");
        assert!(free <= Time::from_secs(1_700_000_040 + 3660), "{free:?}");
        let again = c.to_text();
        assert_eq!(Counter::parse(&again, again.len() as u64), Some(c));
    }

    #[test]
    fn a_version_1_window_of_seconds_stays_within_a_page() {
        let counts = vec!["1"; 60].join(" ");
        let text = version_1(&format!(
            "client x\ntotal 0\nrefused 0 0\nnotified 0\nwindow 1 100 0 {counts}\n"
        ));
        let c = Counter::parse(&text, text.len() as u64).unwrap();
        let w = c.window(1).unwrap();
        assert!(w.counts.len() <= MAX_KEPT);
        assert_eq!(w.count(), 60, "nothing lost");
    }
}

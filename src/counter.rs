//! What a counter file holds, and its on-disk text.
//!
//! A rolling window of PERIOD is kept as 60 buckets of PERIOD/60 (at least one
//! second each), so a file stays under a page whatever the limit is. A bucket
//! counts for the whole time it overlaps the window, which errs strict: a
//! recipient stays counted for at most PERIOD + 2 × PERIOD/60 (at least PERIOD
//! + 2 s), never less than PERIOD.
//!
//! The file is rewritten in place by one `pwrite` at offset 0 and then
//! truncated; the text ends with `end` and a checksum, and anything after that
//! line is ignored. A kill between the two calls therefore leaves a valid
//! file, and a write of one page cannot be torn by a signal.

use crate::client::printable;

/// Buckets per window period.
const BUCKETS: u32 = 60;
/// Counter files larger than this can only be the seed script's `X` files.
pub const READ_LIMIT: usize = 64 * 1024;
/// Client names stored in a counter are cut to this many bytes.
const NAME_LIMIT: usize = 255;

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
    /// The administrator was told this counter went over its classic limit.
    pub classic_notified: bool,
    pub windows: Vec<Window>,
}

/// Recipient counts per bucket of one rolling window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub period: u32,
    /// Absolute index (Unix time / bucket width) of `counts[0]`.
    pub first: u64,
    pub counts: Vec<u64>,
    /// The administrator was told this window went over; cleared when room frees.
    pub notified: bool,
}

impl Window {
    pub fn new(period: u32) -> Window {
        Window {
            period,
            first: 0,
            counts: Vec::new(),
            notified: false,
        }
    }

    /// Seconds per bucket.
    pub fn width(&self) -> u64 {
        u64::from(self.period.div_ceil(BUCKETS).max(1))
    }

    /// Buckets the period spans; one more is kept, see `expire`.
    fn span(&self) -> u64 {
        u64::from(self.period).div_ceil(self.width())
    }

    /// Drops buckets that no longer overlap the window ending at `now`. The
    /// buckets kept, `now/width - span ..= now/width`, start at or before
    /// `now - period`, which is what makes the count err strict.
    pub fn expire(&mut self, now: u64) {
        let oldest = (now / self.width()).saturating_sub(self.span());
        if oldest > self.first {
            let gone = ((oldest - self.first) as usize).min(self.counts.len());
            self.counts.drain(..gone);
            self.first = oldest;
        }
        while self.counts.last() == Some(&0) {
            self.counts.pop();
        }
        if self.counts.is_empty() {
            self.first = oldest;
        }
    }

    /// Recipients within the window (call `expire` first).
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Counts one recipient at `now`.
    pub fn add(&mut self, now: u64) {
        let here = now / self.width();
        if self.counts.is_empty() {
            self.first = here;
        }
        // A clock stepped back puts the recipient in the newest bucket kept,
        // which holds it at least as long as its own would.
        let at = here.saturating_sub(self.first) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        let i = at.min(self.counts.len() - 1);
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// Takes back `n` recipients counted by `add(at)`, from the bucket that
    /// call used (or as much of `n` as it still holds: an expired bucket has
    /// nothing left to give back).
    pub fn take_back(&mut self, at: u64, n: u64) {
        if self.counts.is_empty() {
            return;
        }
        let here = at / self.width();
        if here < self.first {
            return;
        }
        // As in `add`: a clock stepped back counted into the newest bucket.
        let i = ((here - self.first) as usize).min(self.counts.len() - 1);
        self.counts[i] = self.counts[i].saturating_sub(n);
    }

    /// The first moment at which the window holds fewer than `max` (call
    /// `expire` first); `None` when it already does.
    pub fn room_at(&self, max: u64) -> Option<u64> {
        let mut left = self.count();
        if left < max {
            return None;
        }
        for (i, c) in self.counts.iter().enumerate() {
            left -= c;
            if left < max {
                return Some((self.first + i as u64 + self.span() + 1) * self.width());
            }
        }
        None
    }
}

impl Counter {
    /// The window for `period`, created empty if the counter has none yet.
    pub fn window_mut(&mut self, period: u32) -> &mut Window {
        match self.windows.iter().position(|w| w.period == period) {
            Some(i) => &mut self.windows[i],
            None => {
                self.windows.push(Window::new(period));
                self.windows.last_mut().unwrap()
            }
        }
    }

    pub fn window(&self, period: u32) -> Option<&Window> {
        self.windows.iter().find(|w| w.period == period)
    }

    /// Keeps exactly the windows of `periods`, each expired to `now`.
    pub fn keep_windows(&mut self, periods: &[u32], now: u64) {
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
        self.total == 0 && self.refused == 0 && self.windows.iter().all(|w| w.counts.is_empty())
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

    /// The file's text; `parse` reads it back.
    pub fn to_text(&self) -> Vec<u8> {
        let name = &self.client[..self.client.len().min(NAME_LIMIT)];
        let mut t = format!(
            "overlimit 1\nclient {}\ntotal {}\nrefused {} {}\nnotified {}\n",
            printable(name),
            self.total,
            self.refused,
            self.last_refused,
            u8::from(self.classic_notified)
        );
        for w in &self.windows {
            t.push_str(&format!(
                "window {} {} {}",
                w.period,
                w.first,
                u8::from(w.notified)
            ));
            for c in &w.counts {
                t.push_str(&format!(" {c}"));
            }
            t.push('\n');
        }
        let sum = checksum(t.as_bytes());
        t.push_str(&format!("end {sum:08x}\n"));
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
    let mut lines = body.lines();
    if lines.next()? != "overlimit 1" {
        return None;
    }
    let mut c = Counter {
        client: unescape(lines.next()?.strip_prefix("client ")?)?,
        ..Counter::default()
    };
    c.total = lines.next()?.strip_prefix("total ")?.parse().ok()?;
    let mut refused = lines.next()?.strip_prefix("refused ")?.split(' ');
    c.refused = refused.next()?.parse().ok()?;
    c.last_refused = refused.next()?.parse().ok()?;
    c.classic_notified = flag(lines.next()?.strip_prefix("notified ")?)?;
    for line in lines {
        let mut f = line.strip_prefix("window ")?.split(' ');
        let period: u32 = f.next()?.parse().ok()?;
        let first = f.next()?.parse().ok()?;
        let notified = flag(f.next()?)?;
        let counts = f.map(|n| n.parse().ok()).collect::<Option<Vec<u64>>>()?;
        if period == 0 || counts.len() > (BUCKETS as usize + 1) || c.window(period).is_some() {
            return None;
        }
        c.windows.push(Window {
            period,
            first,
            counts,
            notified,
        });
    }
    Some(c)
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

    #[test]
    fn take_back_undoes_add_and_never_goes_below_zero() {
        let mut w = Window::new(3600);
        for _ in 0..3 {
            w.add(1_000_000);
        }
        w.add(1_000_200);
        w.take_back(1_000_000, 2);
        assert_eq!(w.count(), 2);
        w.take_back(1_000_000, 5);
        assert_eq!(w.count(), 1);
        w.take_back(10, 1);
        assert_eq!(
            w.count(),
            1,
            "a time before the window's first bucket holds nothing"
        );
    }

    #[test]
    fn text_round_trips_and_ignores_a_tail() {
        let mut c = Counter {
            client: b"odd name\n\xff".to_vec(),
            total: 7,
            refused: 2,
            last_refused: 1_700_000_000,
            ..Counter::default()
        };
        c.window_mut(3600).add(1_700_000_000);
        let mut text = c.to_text();
        assert_eq!(Counter::parse(&text, text.len() as u64), Some(c.clone()));
        text.extend_from_slice(b"XXXX garbage left by a kill before truncate");
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
    fn window_errs_strict_and_frees_room() {
        let mut w = Window::new(3600); // 60 s buckets
        for t in [0, 30, 59] {
            w.add(1_000_020 + t);
        }
        w.expire(1_000_100);
        assert_eq!(w.count(), 3);
        // Still counted a full period after the last recipient...
        w.expire(1_000_079 + 3600);
        assert_eq!(w.count(), 3);
        // ...and gone within period + 2 buckets of the first.
        let free = w.room_at(3).unwrap();
        assert!((1_000_079 + 3600..=1_000_020 + 3600 + 120).contains(&free));
        w.expire(free);
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn windows_of_seconds_use_one_second_buckets() {
        let mut w = Window::new(2);
        w.add(100);
        w.add(101);
        w.expire(101);
        assert_eq!(w.count(), 2);
        assert_eq!(w.room_at(2), Some(103));
        w.expire(103);
        assert_eq!(w.count(), 1);
    }
}

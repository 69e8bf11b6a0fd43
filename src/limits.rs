//! The right-hand side of a control line: `1000`, `100/1h`, `50/5m,100/30m,200/1h`.
//!
//! A bare `N` is the classic count that runs until `overlimit-sweep` resets it;
//! `N/PERIOD` is a rolling window. `N = 0` imposes nothing, as in the seed script.

use std::fmt;

/// The most windows one line may carry. Each window costs about 61 numbers in
/// every counter file, and a counter must stay within one page so that a write
/// is never torn by a kill (see `counter.rs`).
pub const MAX_WINDOWS: usize = 4;

/// One item of a line: at most `max` recipients, either since the last sweep
/// (`period == None`) or within any `period` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    pub max: u64,
    pub period: Option<u32>,
}

/// Every item of one line. Items with `max == 0` are dropped when parsed, so an
/// empty list means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub items: Vec<Item>,
}

/// Why the right-hand side of a line was refused; `overlimit check` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitError {
    Empty,
    BadNumber(String),
    UnknownUnit(String),
    BadPeriod(String),
    TooManyWindows,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::Empty => write!(f, "empty limit"),
            LimitError::BadNumber(s) => write!(f, "bad number {s:?}"),
            LimitError::UnknownUnit(s) => {
                write!(f, "unknown unit in {s:?} (use s, m, h, d or w)")
            }
            LimitError::BadPeriod(s) => write!(f, "bad period {s:?}"),
            LimitError::TooManyWindows => write!(f, "more than {MAX_WINDOWS} windows"),
        }
    }
}

impl Limits {
    /// Parses `item[,item...]`; the caller has already removed white space.
    pub fn parse(text: &[u8]) -> Result<Limits, LimitError> {
        if text.is_empty() {
            return Err(LimitError::Empty);
        }
        let mut items = Vec::new();
        for part in text.split(|&b| b == b',') {
            let item = parse_item(part)?;
            if item.max > 0 {
                items.push(item);
            }
        }
        if items.iter().filter(|i| i.period.is_some()).count() > MAX_WINDOWS {
            return Err(LimitError::TooManyWindows);
        }
        Ok(Limits { items })
    }

    pub fn is_unlimited(&self) -> bool {
        self.items.is_empty()
    }

    /// The classic limit, if the line has one (the smallest, if several).
    pub fn classic(&self) -> Option<u64> {
        self.items
            .iter()
            .filter(|i| i.period.is_none())
            .map(|i| i.max)
            .min()
    }

    /// The distinct window periods, in ascending order.
    pub fn periods(&self) -> Vec<u32> {
        let mut p: Vec<u32> = self.items.iter().filter_map(|i| i.period).collect();
        p.sort_unstable();
        p.dedup();
        p
    }
}

impl fmt::Display for Limits {
    /// The canonical form, which `parse` reads back: `0` for unlimited.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.items.is_empty() {
            return write!(f, "0");
        }
        for (n, item) in self.items.iter().enumerate() {
            if n > 0 {
                write!(f, ",")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period {
            None => write!(f, "{}", self.max),
            Some(p) => write!(f, "{}/{}", self.max, format_period(p)),
        }
    }
}

/// Writes a period in the largest unit that divides it: 3600 is `1h`.
pub fn format_period(seconds: u32) -> String {
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

fn parse_item(part: &[u8]) -> Result<Item, LimitError> {
    let shown = || String::from_utf8_lossy(part).into_owned();
    if part.is_empty() {
        return Err(LimitError::Empty);
    }
    let (count, period) = match part.iter().position(|&b| b == b'/') {
        None => (part, None),
        Some(slash) => (&part[..slash], Some(&part[slash + 1..])),
    };
    let max = parse_number(count).ok_or_else(|| LimitError::BadNumber(shown()))?;
    let period = match period {
        None => None,
        Some(p) => Some(parse_period(p).map_err(|e| match e {
            PeriodError::Unit => LimitError::UnknownUnit(shown()),
            PeriodError::Value => LimitError::BadPeriod(shown()),
        })?),
    };
    Ok(Item { max, period })
}

/// A duration written as a period is (`7d`, `90m`), in seconds, for the
/// administrator's flags (`history --since`, `block --for`).
pub fn parse_duration(text: &[u8]) -> Option<u32> {
    parse_period(text).ok()
}

enum PeriodError {
    Unit,
    Value,
}

fn parse_period(p: &[u8]) -> Result<u32, PeriodError> {
    let digits = p.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, unit) = p.split_at(digits);
    let size: u64 = match unit {
        b"s" => 1,
        b"m" => 60,
        b"h" => 3_600,
        b"d" => 86_400,
        b"w" => 604_800,
        _ => return Err(PeriodError::Unit),
    };
    let n = parse_number(number).ok_or(PeriodError::Value)?;
    // A period of zero cannot hold anything; one over a year is surely a typo
    // and would overflow the counter's bucket arithmetic.
    match n.checked_mul(size) {
        Some(s) if s > 0 && s <= 366 * 86_400 => Ok(s as u32),
        _ => Err(PeriodError::Value),
    }
}

/// Decimal digits only, at most 18 of them (no sign, no overflow).
pub fn parse_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Limits, LimitError> {
        Limits::parse(s.as_bytes())
    }

    #[test]
    fn classic_and_windows_round_trip() {
        let l = p("50/5m,100/30m,200/1h,1000").unwrap();
        assert_eq!(l.to_string(), "50/5m,100/30m,200/1h,1000");
        assert_eq!(l.classic(), Some(1000));
        assert_eq!(l.periods(), vec![300, 1800, 3600]);
    }

    #[test]
    fn zero_items_are_unlimited() {
        assert!(p("0").unwrap().is_unlimited());
        assert!(p("0/1h").unwrap().is_unlimited());
        assert_eq!(p("0,5/1m").unwrap().items.len(), 1);
    }

    #[test]
    fn each_error_kind() {
        assert_eq!(p(""), Err(LimitError::Empty));
        assert_eq!(p("5,"), Err(LimitError::Empty));
        assert!(matches!(p("abc"), Err(LimitError::BadNumber(_))));
        assert!(matches!(p("-1"), Err(LimitError::BadNumber(_))));
        assert!(matches!(
            p("99999999999999999999"),
            Err(LimitError::BadNumber(_))
        ));
        assert!(matches!(p("5/1y"), Err(LimitError::UnknownUnit(_))));
        assert!(matches!(p("5/h"), Err(LimitError::BadPeriod(_))));
        assert!(matches!(p("5/0m"), Err(LimitError::BadPeriod(_))));
        assert!(matches!(p("5/1000w"), Err(LimitError::BadPeriod(_))));
        assert_eq!(
            p("1/1s,1/2s,1/3s,1/4s,1/5s"),
            Err(LimitError::TooManyWindows)
        );
    }

    #[test]
    fn periods_format_in_largest_unit() {
        assert_eq!(format_period(90), "90s");
        assert_eq!(format_period(120), "2m");
        assert_eq!(format_period(86_400), "1d");
    }
}

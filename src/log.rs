//! Diagnostics: one line on stderr, starting with the program's name, written
//! in a single call and never panicking (stderr may be closed or a full pipe).

use std::io::Write;

/// Writes `PROGRAM: MESSAGE` and a newline to stderr.
pub fn line(program: &str, message: &str) {
    let text = format!("{program}: {message}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// A duration as an administrator reads it: `45s`, `12m30s`, `3h5m`, `2d4h`.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_naturally() {
        assert_eq!(super::duration(45), "45s");
        assert_eq!(super::duration(750), "12m30s");
        assert_eq!(super::duration(3_600 * 3 + 300), "3h5m");
        assert_eq!(super::duration(86_400 * 2 + 3_600 * 4), "2d4h");
    }
}

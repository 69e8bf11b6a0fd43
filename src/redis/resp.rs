//! RESP2, the protocol Redis and Valkey speak: commands out as arrays of bulk
//! strings, replies in as one of five types.
//!
//! The reader trusts nothing the server sends: a bulk string or an array
//! longer than a counter could need is refused before anything is
//! allocated, and arrays nest at most as deep as `EXEC` of `SCAN` would.

/// The longest bulk string read: a counter is under 64 KiB (see
/// `counter.rs`); anything longer is not ours.
pub const MAX_BULK: usize = 1 << 20;
/// The most elements of one array: a `SCAN` batch or an `EXEC` of a decision.
pub const MAX_ARRAY: usize = 1 << 16;
const MAX_DEPTH: usize = 3;

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`: the server refused the command.
    Error(String),
    Integer(i64),
    /// `$-1` is `Bulk(None)`.
    Bulk(Option<Vec<u8>>),
    /// `*-1` (an `EXEC` whose `WATCH`ed keys changed) is `Array(None)`.
    Array(Option<Vec<Reply>>),
}

/// Appends one command to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where the parser gets its bytes: the connection, which enforces the
/// deadline, or a slice in tests.
pub trait Source {
    /// One line without its CRLF.
    fn line(&mut self) -> Result<Vec<u8>, String>;
    /// Exactly `n` bytes, then a CRLF.
    fn block(&mut self, n: usize) -> Result<Vec<u8>, String>;
}

/// Reads one reply.
pub fn read(src: &mut dyn Source) -> Result<Reply, String> {
    read_at(src, 0)
}

fn read_at(src: &mut dyn Source, depth: usize) -> Result<Reply, String> {
    let line = src.line()?;
    let (&kind, rest) = line.split_first().ok_or("an empty reply line")?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Reply::Status(text())),
        b'-' => Ok(Reply::Error(text())),
        b':' => Ok(Reply::Integer(integer(rest)?)),
        b'$' => match length(rest, MAX_BULK)? {
            None => Ok(Reply::Bulk(None)),
            Some(n) => Ok(Reply::Bulk(Some(src.block(n)?))),
        },
        b'*' => {
            let Some(n) = length(rest, MAX_ARRAY)? else {
                return Ok(Reply::Array(None));
            };
            if depth >= MAX_DEPTH {
                return Err("arrays nested too deep".into());
            }
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                items.push(read_at(src, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(format!("a reply of unknown type {:?}", kind as char)),
    }
}

fn integer(s: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{:?} is not an integer", String::from_utf8_lossy(s)))
}

/// A length, `None` for `-1`, refused past `max`.
fn length(s: &[u8], max: usize) -> Result<Option<usize>, String> {
    match integer(s)? {
        -1 => Ok(None),
        n if n >= 0 && n as u64 <= max as u64 => Ok(Some(n as usize)),
        n => Err(format!("a length of {n} (at most {max} is read)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes<'a>(&'a [u8]);

    impl Source for Bytes<'_> {
        fn line(&mut self) -> Result<Vec<u8>, String> {
            let i = self.0.windows(2).position(|w| w == b"\r\n").ok_or("eof")?;
            let l = self.0[..i].to_vec();
            self.0 = &self.0[i + 2..];
            Ok(l)
        }
        fn block(&mut self, n: usize) -> Result<Vec<u8>, String> {
            if self.0.len() < n + 2 || &self.0[n..n + 2] != b"\r\n" {
                return Err("short".into());
            }
            let b = self.0[..n].to_vec();
            self.0 = &self.0[n + 2..];
            Ok(b)
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
    }

    #[test]
    fn every_reply_type_reads() {
        let mut src = Bytes(
            b"+OK\r\n-ERR no\r\n:42\r\n$-1\r\n$2\r\nhi\r\n*-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n",
        );
        let want = [
            Reply::Status("OK".into()),
            Reply::Error("ERR no".into()),
            Reply::Integer(42),
            Reply::Bulk(None),
            Reply::Bulk(Some(b"hi".to_vec())),
            Reply::Array(None),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Array(Some(vec![Reply::Bulk(Some(Vec::new()))])),
            ])),
        ];
        for w in want {
            assert_eq!(read(&mut src).unwrap(), w);
        }
    }

    #[test]
    fn hostile_replies_are_refused_before_allocating() {
        for bad in [
            &b"$99999999999\r\n"[..],
            b"*99999999\r\n",
            b"$-2\r\n",
            b"?\r\n",
            b"\r\n",
            b":x\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(
                read(&mut Bytes(bad)).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

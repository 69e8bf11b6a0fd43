//! Byte searches through the C library's `memchr` and `memrchr`, which are
//! vectorised: the plug-in scans a whole control file per call when it has
//! no current cdb, and a byte-at-a-time loop made that scan twice as slow.

/// The index of the first `byte` in `hay`.
pub fn find(byte: u8, hay: &[u8]) -> Option<usize> {
    // An empty slice's pointer is dangling, which C does not allow even
    // with a length of 0.
    if hay.is_empty() {
        return None;
    }
    // SAFETY: the pointer and length describe `hay`, which outlives the call;
    // a result is a pointer into it.
    let at = unsafe { libc::memchr(hay.as_ptr().cast(), i32::from(byte), hay.len()) };
    (!at.is_null()).then(|| at as usize - hay.as_ptr() as usize)
}

/// The index of the last `byte` in `hay`.
pub fn find_last(byte: u8, hay: &[u8]) -> Option<usize> {
    if hay.is_empty() {
        return None;
    }
    // SAFETY: as for `find`.
    let at = unsafe { libc::memrchr(hay.as_ptr().cast(), i32::from(byte), hay.len()) };
    (!at.is_null()).then(|| at as usize - hay.as_ptr() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_as_iterators_do() {
        for hay in [&b""[..], b":", b"a:b:c", b"no colon", b"::", b"x\n:\n"] {
            for byte in [b':', b'\n', b'#'] {
                assert_eq!(find(byte, hay), hay.iter().position(|&b| b == byte));
                assert_eq!(find_last(byte, hay), hay.iter().rposition(|&b| b == byte));
            }
        }
    }
}

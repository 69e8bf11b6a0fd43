//! Fuzzes one control-file line: cleaning, parsing, and the canonical form of
//! whatever parses, which must parse to the same entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlimit::control::{clean, Entry};
use overlimit::limits::Limits;

fuzz_target!(|raw: &[u8]| {
    let _ = Limits::parse(raw);
    let mut buf = Vec::new();
    if !clean(raw, &mut buf) {
        return;
    }
    if let Ok(e) = Entry::parse(&buf) {
        let canonical = [&e.key.to_bytes()[..], b":", e.limits.to_string().as_bytes()].concat();
        let again = Entry::parse(&canonical).expect("the canonical form parses");
        assert_eq!(
            (again.key, again.limits, again.masked),
            (e.key, e.limits, false)
        );
    }
});

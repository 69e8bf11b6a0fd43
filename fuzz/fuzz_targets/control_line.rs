//! Fuzzes one control-file line: cleaning, classifying, parsing, and the
//! canonical form of whatever parses, which must parse to the same entry;
//! the plug-in's allocation-free key must be that canonical key, and a
//! client's line must name the client the same bytes make from a login.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlimit::client::{Client, DEFAULT_ATCHARS};
use overlimit::control::{classify, clean, split, write_key, Entry, Key, Kind};
use overlimit::limits::Limits;

fuzz_target!(|raw: &[u8]| {
    let _ = Limits::parse(raw);
    let mut buf = Vec::new();
    if !clean(raw, &mut buf) {
        return;
    }
    if let Ok((key, _)) = split(&buf) {
        if let Ok(kind) = classify(key) {
            let mut scanned = Vec::new();
            write_key(kind, DEFAULT_ATCHARS, &mut scanned);
            let canonical = Key::from_kind(kind, DEFAULT_ATCHARS);
            assert_eq!(scanned, canonical.to_bytes());
            if let Kind::Client(name) = kind {
                let client = Client::from_login(name, DEFAULT_ATCHARS).expect("not empty");
                assert_eq!(client.name(), scanned);
            }
        }
    }
    if let Ok(e) = Entry::parse_with(&buf, DEFAULT_ATCHARS) {
        let canonical = [&e.key.to_bytes()[..], b":", e.limits.to_string().as_bytes()].concat();
        let again = Entry::parse_with(&canonical, DEFAULT_ATCHARS).expect("the canonical form parses");
        assert_eq!(
            (again.key, again.limits, again.masked),
            (e.key, e.limits, false)
        );
    }
});

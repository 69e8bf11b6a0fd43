//! Fuzzes the cdb reader on arbitrary files: lookups end, with a value, none,
//! or an error, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlimit::cdb::Reader;
use std::fs::File;

fuzz_target!(|bytes: &[u8]| {
    let path = std::env::temp_dir().join(format!("overlimit-fuzz-cdb-{}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let r = Reader::new(File::open(&path).unwrap());
    for key in [
        &b""[..],
        b"\nsource",
        b"\nranges4",
        b"\naggregates6",
        b"\nctime",
        b"\ndigest",
        b"@2001:db8::/64",
        b"a@example.com",
        b"10.0.0.0/8",
    ] {
        let _ = r.get(key);
    }
});

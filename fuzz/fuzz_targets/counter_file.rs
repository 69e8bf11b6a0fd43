//! Fuzzes the counter-file reader: any bytes read as a counter or not, and a
//! counter that reads writes back to the same counter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlimit::counter::Counter;

fuzz_target!(|bytes: &[u8]| {
    if let Some(c) = Counter::parse(bytes, bytes.len() as u64) {
        // Seed-script files of `X`s read as a bare count; others round-trip.
        if !bytes.iter().all(|&b| b == b'X') && c.client.len() <= 255 {
            let text = c.to_text();
            assert_eq!(Counter::parse(&text, text.len() as u64), Some(c));
        }
    }
});

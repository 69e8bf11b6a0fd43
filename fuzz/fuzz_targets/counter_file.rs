//! Fuzzes the counter-file reader: any bytes read as a counter or not, a
//! counter that reads writes back to the same counter, and the window
//! arithmetic over whatever numbers it holds (at a moment taken from the
//! bytes) neither overflows nor grows a window past its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlimit::counter::Counter;
use overlimit::time::Time;
use overlimit::window::MAX_KEPT;

fuzz_target!(|bytes: &[u8]| {
    if let Some(mut c) = Counter::parse(bytes, bytes.len() as u64) {
        // Seed-script files of `X`s read as a bare count; others round-trip.
        if !bytes.iter().all(|&b| b == b'X') && c.client.len() <= 255 {
            let text = c.to_text();
            assert_eq!(Counter::parse(&text, text.len() as u64), Some(c.clone()));
        }
        let mut at = [0u8; 8];
        let n = bytes.len().min(8);
        at[..n].copy_from_slice(&bytes[..n]);
        let now = Time::from_millis(u64::from_le_bytes(at));
        let periods: Vec<u32> = c.windows.iter().map(|w| w.period).collect();
        c.keep_windows(&periods, now);
        for w in &mut c.windows {
            let _ = w.room_at(1);
            let _ = w.room_at(w.count());
            w.add(now, u64::MAX);
            assert!(w.counts.len() <= MAX_KEPT);
        }
    }
});

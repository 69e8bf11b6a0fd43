//! Pins "Large control files": `overlimit compile` and the plug-in's use of
//! `RELAYLIMITS.cdb` only while it matches the text, so that a hand edit is
//! never silently ignored, and never a crash or a hang from a damaged cdb.

mod common;
use common::*;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn cdb(s: &Sandbox) -> PathBuf {
    s.root.join("relaylimits.cdb")
}

fn compile(s: &Sandbox) {
    let o = s.admin(&["compile"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
}

/// How many calls pass before the first refusal (at most `max`), and what
/// each call logged.
fn passes_until_refused(run: impl Fn() -> Run, max: usize) -> (usize, String) {
    let mut log = String::new();
    for n in 0..max {
        let o = run().run();
        log.push_str(&o.stderr);
        match o.code {
            Some(112) => {}
            Some(113) => return (n, log),
            _ => panic!("{o:?}"),
        }
    }
    (max, log)
}

/// Rewrites the value of `key`'s record in the cdb in place, keeping its
/// length: a cdb that says something the text does not, yet still carries
/// the text's fingerprint. Only a plug-in that reads the cdb sees it.
fn patch_value(s: &Sandbox, key: &str, old: &str, new: &str) {
    assert_eq!(old.len(), new.len());
    let mut bytes = std::fs::read(cdb(s)).unwrap();
    let needle = [key.as_bytes(), old.as_bytes()].concat();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("record in the cdb")
        + key.len();
    bytes[at..at + new.len()].copy_from_slice(new.as_bytes());
    // In place, so the cdb file itself is the same one.
    File::options()
        .write(true)
        .open(cdb(s))
        .unwrap()
        .write_all_at(&bytes, 0)
        .unwrap();
}

/// A sandbox whose compiled cdb lets `a@example.com` 3 recipients while the
/// text says 1 (the record is `a@example.com` → `2 1`, line 2).
fn patched() -> Sandbox {
    let s = Sandbox::with_limits("b@example.com:9\na@example.com:1\n");
    compile(&s);
    patch_value(&s, "a@example.com", "2 1", "2 3");
    s
}

fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn compile_writes_the_cdb_beside_the_text_and_leaves_no_temporary_file() {
    let s = Sandbox::with_limits("# hosts\n:100\na@example.com:5\n192.0.2.0/24:7\n");
    let o = s.admin(&["compile"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("3 entries"), "{o:?}");
    let mut names: Vec<String> = std::fs::read_dir(&s.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["overlimit", "relaylimits", "relaylimits.cdb"]);
    // The cdb's header is 256 (position, length) pairs: 2 KiB at least.
    assert!(std::fs::metadata(cdb(&s)).unwrap().len() > 2048);
}

#[test]
fn the_plugin_uses_the_cdb_while_it_matches_the_text() {
    let s = patched();
    let (n, log) = passes_until_refused(|| s.user("a@example.com"), 10);
    assert_eq!(n, 3, "the cdb's limit, not the text's 1: {log}");
    assert!(!log.contains("stale"), "{log}");
}

#[test]
fn recompiling_after_an_edit_makes_the_cdb_current_again() {
    let s = patched();
    let before = std::fs::metadata(cdb(&s)).unwrap().ino();
    s.limits("b@example.com:9\na@example.com:2\n");
    // `check` warns of the stale cdb, and counts the warning.
    let o = s.admin(&["check"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(
        o.stderr.contains("relaylimits.cdb: warning: stale"),
        "{o:?}"
    );
    assert!(
        o.stdout.ends_with(": 2 entries, 0 errors, 1 warning\n"),
        "{o:?}"
    );
    compile(&s);
    // A new file renamed into place, never the old one rewritten: a plug-in
    // that has the old one open reads it whole.
    assert_ne!(std::fs::metadata(cdb(&s)).unwrap().ino(), before);
    let (n, log) = passes_until_refused(|| s.user("a@example.com"), 10);
    assert_eq!(n, 2, "{log}");
    assert!(!log.contains("stale"), "{log}");
}

/// Each way an administrator changes the text; after each, the plug-in must
/// apply the text (limit `want`), not the patched cdb (3), and log why.
#[test]
fn after_a_hand_edit_the_plugin_reads_the_text_and_logs_that_the_cdb_is_stale() {
    type Edit = fn(&Path);
    let edits: [(&str, Edit, usize); 5] = [
        (
            "touch: only the mtime changes",
            |p| set_mtime(p, SystemTime::now() + Duration::from_secs(5)),
            1,
        ),
        (
            "append a line",
            |p| {
                let mut f = OpenOptions::new().append(true).open(p).unwrap();
                std::io::Write::write_all(&mut f, b"c@example.com:4\n").unwrap();
            },
            1,
        ),
        (
            "same-size edit in place with a different mtime",
            |p| {
                let f = File::options().write(true).open(p).unwrap();
                f.write_all_at(b"2", "b@example.com:9\na@example.com:".len() as u64)
                    .unwrap();
                f.set_modified(SystemTime::now() + Duration::from_secs(7))
                    .unwrap();
            },
            2,
        ),
        (
            // As `cp -p` over the file or an editor that keeps times does:
            // inode, size and mtime all as compiled; only the ctime tells.
            "same-size edit in place with the mtime put back",
            |p| {
                let old = std::fs::metadata(p).unwrap().modified().unwrap();
                // The ctime has a clock tick's resolution; make sure it moves.
                std::thread::sleep(Duration::from_millis(20));
                let f = File::options().write(true).open(p).unwrap();
                f.write_all_at(b"2", "b@example.com:9\na@example.com:".len() as u64)
                    .unwrap();
                f.set_modified(old).unwrap();
                assert_eq!(std::fs::metadata(p).unwrap().modified().unwrap(), old);
            },
            2,
        ),
        (
            "an editor's save: a new file renamed over the old",
            |p| {
                let new = p.with_extension("new");
                std::fs::write(&new, "b@example.com:9\na@example.com:1\n").unwrap();
                std::fs::rename(&new, p).unwrap();
            },
            1,
        ),
    ];
    for (what, edit, want) in edits {
        let s = patched();
        edit(&s.control());
        let (n, log) = passes_until_refused(|| s.user("a@example.com"), 10);
        assert_eq!(n, want, "{what}: the text's limit: {log}");
        let stale = log
            .lines()
            .filter(|l| l.contains("relaylimits.cdb is stale"))
            .count();
        assert_eq!(stale, want + 1, "{what}: one stale line per call: {log}");
        assert!(
            log.lines().all(|l| l.starts_with("rcptcheck-overlimit: ")),
            "{what}: {log}"
        );
    }
}

#[test]
fn a_cdb_whose_text_was_removed_is_not_used() {
    let s = patched();
    std::fs::remove_file(s.control()).unwrap();
    // No text: every client is unlimited, whatever the leftover cdb says.
    let (n, log) = passes_until_refused(|| s.user("a@example.com"), 6);
    assert_eq!(n, 6, "{log}");
}

/// One control file with every kind of key; ranges nest so that only the
/// longest prefix gives the right limit. Each line's limit is distinct.
const KINDS: &str = "\
:1
a@d.example:2
*@d.example:3
@d.example:4/1h
*@e.example:5
@f.example:2
10.0.0.0/8:2
10.1.0.0/16:3
10.1.2.0/24:4
10.1.2.3:5
192.0.2.128/25:6
2001:db8::/32:2
2001:db8:1::/48:3
2001:db8:1:2::/64:4
2001:DB8:1:2::7:5
::ffff:198.51.100.0/120:6
";

/// Calls, in order and in one counter directory, and how many each client
/// has passed when the first refusal of its own comes; with the domain
/// aggregate `@d.example:4/1h` shared by a@ and b@.
type Case = (&'static [&'static str], &'static [(&'static str, usize)]);
const CASES: &[Case] = &[
    (&["a@d.example"; 4], &[("a@d.example", 2)]),
    (&["B@D.example"; 5], &[("b@d.example", 3)]),
    (
        &[
            "a@d.example",
            "b@d.example",
            "a@d.example",
            "b@d.example",
            "b@d.example",
            "a@d.example",
        ],
        // The aggregate (4) fills after a, b, a, b: b's third is refused.
        &[("a@d.example", 2), ("b@d.example", 2)],
    ),
    (&["c@e.example"; 7], &[("c@e.example", 5)]),
    (&["z@f.example"; 3], &[("z@f.example", 1)]),
    (
        &["nobody@nowhere.example"; 3],
        &[("nobody@nowhere.example", 1)],
    ),
    (&["10.9.9.9"; 3], &[("10.9.9.9", 2)]),
    (&["10.1.9.9"; 4], &[("10.1.9.9", 3)]),
    (&["10.1.2.9"; 5], &[("10.1.2.9", 4)]),
    (&["10.1.2.3"; 6], &[("10.1.2.3", 5)]),
    (&["::ffff:10.1.2.3"; 6], &[("::ffff:10.1.2.3", 5)]),
    (&["192.0.2.200"; 7], &[("192.0.2.200", 6)]),
    (&["192.0.2.1"; 3], &[("192.0.2.1", 1)]),
    (&["2001:db8:ff::1"; 3], &[("2001:db8:ff::1", 2)]),
    (&["2001:db8:1:ff::1"; 4], &[("2001:db8:1:ff::1", 3)]),
    (&["2001:db8:1:2::9"; 5], &[("2001:db8:1:2::9", 4)]),
    (&["2001:db8:1:2:0:0:0:7"; 6], &[("2001:db8:1:2:0:0:0:7", 5)]),
    (&["2001:db9::1"; 3], &[("2001:db9::1", 1)]),
    (&["198.51.100.7"; 7], &[("198.51.100.7", 6)]),
];

fn call(s: &Sandbox, client: &str) -> Run {
    if client.contains('@') {
        s.user(client)
    } else {
        s.ip(client)
    }
}

/// Runs one case in an emptied counter directory: each call's exit code and
/// its log line up to the count (which names the limit reached and whose).
fn decisions(s: &Sandbox, calls: &[&str]) -> Vec<(i32, String)> {
    for f in s.counter_files() {
        std::fs::remove_file(s.dir().join(f)).unwrap();
    }
    calls
        .iter()
        .map(|c| {
            let o = call(s, c).run();
            let line = o.stderr.split(" (").next().unwrap_or("").to_string();
            (o.code.expect("an exit code"), line)
        })
        .collect()
}

#[test]
fn domain_and_range_entries_decide_the_same_through_the_cdb_as_through_the_text() {
    let text = Sandbox::with_limits(KINDS);
    let compiled = Sandbox::with_limits(KINDS);
    compile(&compiled);
    for (calls, want) in CASES {
        let by_text = decisions(&text, calls);
        let by_cdb = decisions(&compiled, calls);
        assert_eq!(by_text, by_cdb, "{calls:?}");
        for (client, passes) in *want {
            // The calls of this client up to its first refusal.
            let mine: Vec<&(i32, String)> = calls
                .iter()
                .zip(&by_text)
                .filter(|(c, _)| c.eq_ignore_ascii_case(client))
                .map(|(_, d)| d)
                .collect();
            let n = mine.iter().take_while(|(code, _)| *code == 112).count();
            assert_eq!(n, *passes, "{client} in {calls:?}: {by_text:?}");
            assert!(n < mine.len(), "{client} is refused in the end");
        }
        assert!(
            by_cdb.iter().all(|(_, l)| !l.contains("stale")),
            "{by_cdb:?}"
        );
    }
    // The shared domain counter is named in the refusal that it caused.
    let shared = decisions(&compiled, CASES[2].0);
    assert!(
        shared[4].1.contains("@d.example limit 4/1h reached"),
        "{shared:?}"
    );
}

#[test]
fn compile_refuses_a_text_with_bad_lines_and_leaves_the_cdb_untouched() {
    let s = Sandbox::with_limits("a@example.com:1\n");
    compile(&s);
    let before = std::fs::read(cdb(&s)).unwrap();
    let mtime = std::fs::metadata(cdb(&s)).unwrap().modified().unwrap();
    s.limits("a@example.com:1\nno colon here\nb@example.com:5/1y\n10.0.0.0/33:4\n");
    let o = s.admin(&["compile"]).run();
    assert_eq!(o.code, Some(1), "{o:?}");
    for line in [":2:", ":3:", ":4:", "not compiled"] {
        assert!(o.stderr.contains(line), "{line}: {o:?}");
    }
    assert_eq!(std::fs::read(cdb(&s)).unwrap(), before);
    assert_eq!(
        std::fs::metadata(cdb(&s)).unwrap().modified().unwrap(),
        mtime
    );
    assert!(!s.root.join("relaylimits.cdb.tmp").exists());
    // The old cdb is now stale: the plug-in reads the text and its good lines.
    let o = s.user("a@example.com").run();
    assert_eq!(o.code, Some(112), "{o:?}");
    assert!(o.stderr.contains("stale"), "{o:?}");
    assert_eq!(s.user("a@example.com").code(), 113);
}

#[test]
fn compile_without_a_control_file_fails_and_writes_nothing() {
    let s = Sandbox::new();
    let o = s.admin(&["compile"]).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("missing"), "{o:?}");
    assert!(!cdb(&s).exists());
}

/// Asserts the plug-in answered as for a client under its limit (the text
/// says so, and a damaged cdb may only fail open), quickly, and logged
/// nothing but its own lines.
fn survives(s: &Sandbox, what: &str) {
    for f in s.counter_files() {
        std::fs::remove_file(s.dir().join(f)).unwrap();
    }
    let o = s.user("a@example.com").run();
    assert_eq!(o.code, Some(112), "{what}: {o:?}");
    assert!(o.elapsed < Duration::from_secs(5), "{what}: {o:?}");
    assert!(
        o.stderr
            .lines()
            .all(|l| l.starts_with("rcptcheck-overlimit: ")
                && (l.contains("stale") || l.contains("internal error"))),
        "{what}: {o:?}"
    );
}

#[test]
fn a_corrupt_or_truncated_cdb_never_crashes_or_hangs_the_plugin() {
    let mut text = String::from(":100\n");
    for i in 0..300 {
        text.push_str(&format!("user{i}@example.com:{}\n", 100 + i));
    }
    text.push_str("a@example.com:50,1000/1h\n10.0.0.0/8:100\n");
    let s = Sandbox::with_limits(&text);
    compile(&s);
    let good = std::fs::read(cdb(&s)).unwrap();
    let len = good.len();
    // The cdb is replaced in place (same inode as compiled is not needed:
    // the fingerprint is the text's), so the plug-in trusts what it reads.
    let put = |bytes: &[u8]| std::fs::write(cdb(&s), bytes).unwrap();
    for cut in [0, 1, 7, 100, 2047, 2048, 2056, len / 2, len - 9, len - 1] {
        put(&good[..cut]);
        survives(&s, &format!("truncated to {cut} bytes"));
    }
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for round in 0..80 {
        let mut bad = good.clone();
        let flips = 1 + rng.below(16);
        for _ in 0..flips {
            // Half the damage in the header and hash tables, where it
            // misleads the reader most.
            let at = if round % 2 == 0 {
                rng.below(2048)
            } else {
                rng.below(len as u64)
            } as usize;
            bad[at] = rng.below(256) as u8;
        }
        put(&bad);
        survives(&s, &format!("round {round}: {flips} bytes changed"));
    }
    // Every table claiming the most slots there can be, at the end of the file.
    let mut bad = good.clone();
    for t in 0..256 {
        bad[t * 8..t * 8 + 8].copy_from_slice(&[0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }
    put(&bad);
    survives(&s, "tables beyond the end");
    // Records claiming lengths of 4 GiB.
    let mut bad = good.clone();
    for b in bad[2048..len.min(2048 + 4096)].iter_mut() {
        *b = 0xff;
    }
    put(&bad);
    survives(&s, "huge record lengths");
    put(&vec![0xff; len]);
    survives(&s, "all 0xff");
    put(&vec![0; len]);
    survives(&s, "all zero");
}

#[test]
fn a_cdb_that_is_a_fifo_a_directory_or_a_dangling_symlink_does_not_hang_the_plugin() {
    let s = Sandbox::with_limits("a@example.com:2\n");
    let c = std::ffi::CString::new(cdb(&s).as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    survives(&s, "a FIFO");
    std::fs::remove_file(cdb(&s)).unwrap();
    std::fs::create_dir(cdb(&s)).unwrap();
    survives(&s, "a directory");
    std::fs::remove_dir(cdb(&s)).unwrap();
    std::os::unix::fs::symlink(s.root.join("nowhere"), cdb(&s)).unwrap();
    survives(&s, "a dangling symlink");
}

#[test]
fn a_chmod_of_the_text_leaves_the_cdb_current() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::with_limits("a@example.com:2\n");
    compile(&s);
    // What the cdb says and the text does not: only a cdb reader obeys 1.
    patch_value(&s, "a@example.com", "1 2", "1 1");
    for mode in [0o640, 0o644] {
        std::fs::set_permissions(s.control(), std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::set_permissions(cdb(&s), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let (n, log) = passes_until_refused(|| s.user("a@example.com"), 5);
    assert_eq!(n, 1, "the cdb was used: {log}");
    assert!(!log.contains("stale"), "{log}");
    // check says why each lookup now compares the bytes, and how to stop it.
    let o = s.admin(&["check"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stderr.contains("owner or mode changed"), "{o:?}");
    compile(&s);
    let o = s.admin(&["check"]).run();
    assert_eq!((o.code, o.stderr.as_str()), (Some(0), ""), "{o:?}");
}

/// The sandbox's compiled control file, as `damage_cdb_record` takes it.
fn compiled_path(s: &Sandbox) -> PathBuf {
    let mut p = s.control().into_os_string();
    p.push(".cdb");
    PathBuf::from(p)
}

#[test]
fn a_record_over_the_cap_is_an_internal_error_with_a_log_line_never_a_signal() {
    // The cap is 64 KiB of key and value together: a length just past it,
    // and the largest a damaged file can claim, are refused before any
    // allocation, as an internal error (the plug-in's exit code for one,
    // 112 or with OVERLIMIT_FAILCLOSED 111, and a log line naming the cdb).
    for claimed in [64 * 1024 + 1, u32::MAX] {
        let s = Sandbox::with_limits(":1000\nbig@example.com:5\n");
        compile(&s);
        damage_cdb_record(&compiled_path(&s), b"big@example.com", claimed);
        for (failclosed, code) in [("", 112), ("1", 111)] {
            let o = s
                .user("big@example.com")
                .env("OVERLIMIT_FAILCLOSED", failclosed)
                .run();
            assert_eq!(o.code, Some(code), "{claimed}: {o:?}");
            assert!(
                o.stderr.starts_with("rcptcheck-overlimit: internal error")
                    && o.stderr.contains("relaylimits.cdb: damaged cdb"),
                "{claimed}: {o:?}"
            );
        }
        // Nothing was counted for the client.
        assert!(s.counter("big@example.com").is_none_or(|c| c.is_empty()));
    }
}

#[test]
fn compile_writes_the_longest_line_as_a_record_the_plugin_reads() {
    // A line of the longest length the reader takes (16 KiB with its
    // newline), the longest key with the most limits a line may hold:
    // compile writes it, and the plug-in answers from the cdb with neither
    // an internal error nor a fallback to the text.
    let max_line = 16 * 1024 - 1;
    let limits = "5,1000000/1h,1000000/2h,1000000/3h,1000000/4h";
    let local = "a".repeat(max_line - "@example.com:".len() - limits.len());
    let login = format!("{local}@example.com");
    let line = format!("{login}:{limits}");
    assert_eq!(line.len(), max_line);
    let s = Sandbox::with_limits(&format!(":0\n{line}\n"));
    compile(&s);
    // The limit of 5 holds, so its record was the one read.
    let (passed, log) = passes_until_refused(|| s.user(&login), 10);
    assert_eq!(passed, 5, "{log}");
    assert!(
        log.lines()
            .all(|l| !l.contains("internal error") && !l.contains("stale")),
        "{log}"
    );
}

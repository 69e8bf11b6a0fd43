//! Pins what the plug-in does when the world misbehaves: processes killed at
//! any instant, a lock never released, a full disk, a counter directory or
//! control file that is missing, unreadable or not a file at all, and links
//! planted in the counter directory. It always answers, quickly, with 112
//! (and a log line), 113, or 111 under OVERLIMIT_FAILCLOSED, and leaves every
//! counter readable with no completed increment lost.

mod common;
use common::*;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// `overlimit status --json CLIENT`, which fails on a counter that does not
/// parse: (classic count, count in the 1h window).
fn status(s: &Sandbox, client: &str) -> (u64, u64) {
    let json = s.status_json(client);
    let window = json
        .split("{\"period\":3600,")
        .nth(1)
        .map_or(0, |w| json_number(w, "count"));
    (json_number(&json, "count"), window)
}

/// Asserts one log line from the plug-in containing `what`.
fn logged(o: &Outcome, what: &str) {
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one log line: {o:?}");
    assert!(
        lines[0].starts_with("rcptcheck-overlimit: ") && lines[0].contains(what),
        "{what}: {o:?}"
    );
}

/// Runs `make()` twice: without and with OVERLIMIT_FAILCLOSED, and asserts an
/// internal error answered quickly, logged with `what`: 112, then 111.
fn fails_open_or_closed(make: impl Fn() -> Run, what: &str) {
    for (failclosed, code) in [("", 112), ("1", 111)] {
        let o = make().env("OVERLIMIT_FAILCLOSED", failclosed).run();
        assert_eq!(o.code, Some(code), "{what}: {o:?}");
        logged(&o, what);
        assert!(o.elapsed < Duration::from_secs(3), "{what}: {o:?}");
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The plug-in for `user`, started through `wrapper` (a program that sets
/// something up and execs the rest of its arguments).
fn wrapped(s: &Sandbox, user: &str, wrapper: &[&str]) -> Run {
    let mut args = wrapper[1..].to_vec();
    args.extend(["--", PLUGIN]);
    Run::new(wrapper[0])
        .args(&args)
        .env("RELAYLIMITS", s.control())
        .env("OVERLIMITDIR", s.dir())
        .env("USE_FD4", "1")
        .env("RECIPIENT", "someone@remote.example")
        .env("RELAYCLIENT", "")
        .env("SMTPAUTHUSER", user)
}

/// The first of `paths` that exists.
fn tool(paths: &[&'static str]) -> Option<&'static str> {
    paths.iter().copied().find(|p| Path::new(p).exists())
}

/// The plug-in run as `nobody` (through util-linux's setpriv), so that file
/// permissions apply: root bypasses them. `None`, with the reason printed,
/// where that cannot be done.
fn as_nobody(s: &Sandbox, user: &str) -> Option<Run> {
    if !is_root() {
        skip("not root, cannot run the plug-in as nobody");
        return None;
    }
    let Some(setpriv) = tool(&["/usr/bin/setpriv", "/bin/setpriv"]) else {
        skip("setpriv (util-linux) not installed");
        return None;
    };
    // nobody must be able to reach the sandbox, inside its private parent.
    chmod(s.root.parent().unwrap(), 0o711);
    chmod(&s.root, 0o755);
    Some(wrapped(
        s,
        user,
        &[setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"],
    ))
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

// ---- Kills -----------------------------------------------------------------

#[test]
fn plugins_killed_with_sigkill_at_random_moments_lose_no_completed_increment() {
    // Every call counts on two files (the user's and the domain's) and in a
    // window as well as the classic count, so a kill can fall between any
    // two of the writes.
    let s = Sandbox::with_limits(":1000000000,1000000000/1h\n@example.com:1000000000/1h\n");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut started, mut answered, mut killed) = (0u64, 0u64, 0u64);
    for wave in 0..200 {
        // Twelve in a row, each while the ones before it may still hold the
        // locks; every other one gets a kill a random moment after its start
        // (spawn returns after the exec; the rest of a run takes a debug
        // build some tens of microseconds), from before its first write to
        // after its exit.
        let mut running = Vec::new();
        for i in 0..12 {
            let mut r = s.user("storm@example.com").spawn();
            if i % 2 == 1 {
                let at = Instant::now() + Duration::from_micros(rng.below(150));
                // Spinning: a sleep this short would overshoot by the timer slack.
                while Instant::now() < at {
                    std::hint::spin_loop();
                }
                let _ = r.child.kill();
            }
            running.push(r);
        }
        started += running.len() as u64;
        for r in running {
            let o = r.finish();
            match (o.code, o.signal) {
                (Some(112), _) => {
                    assert_eq!(o.stderr, "", "{o:?}");
                    answered += 1;
                }
                (None, Some(libc::SIGKILL)) => killed += 1,
                _ => panic!("{o:?}"),
            }
        }
        if wave % 40 == 39 {
            // Readable between waves too, not only at the end.
            status(&s, "storm@example.com");
            status(&s, "@example.com");
        }
    }
    let (total, window) = status(&s, "storm@example.com");
    let (_, domain) = status(&s, "@example.com");
    for (what, n) in [("total", total), ("window", window), ("domain", domain)] {
        assert!(
            answered <= n && n <= started,
            "{what} {n}: answered {answered}, started {started}"
        );
    }
    eprintln!(
        "{started} started, {killed} killed, {answered} answered 112; \
         counted {total} (window {window}), domain {domain}"
    );
    // One write holds both, so the classic count and the window agree.
    assert_eq!(total, window);
    assert!(killed > 100 && answered > 100, "the kills did land");
    assert_eq!(s.counter_files(), ["@example.com", "storm@example.com"]);
}

// ---- Locks -------------------------------------------------------------------

/// Holds an exclusive lock on `path` from another process until dropped: a
/// shell opens the file, util-linux flock locks that open file, and the
/// shell becomes `sleep`, the only holder, so killing it frees the lock.
struct Holder(std::process::Child);
impl Holder {
    fn new(path: &Path) -> Option<Holder> {
        let child = Command::new("sh")
            .arg("-c")
            .arg("exec 9<>\"$1\" && flock -x 9 && echo locked && exec sleep 600")
            .arg("sh")
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut h = Holder(child);
        let mut line = [0u8; 7];
        std::io::Read::read_exact(h.0.stdout.as_mut().unwrap(), &mut line).ok()?;
        Some(h)
    }
}
impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_lock_held_forever_by_another_process_is_given_up_after_about_a_second() {
    let s = Sandbox::with_limits(":100\n@example.com:1000/1h\n");
    assert_eq!(s.user("a@example.com").code(), 112);
    for held in ["a@example.com", "@example.com"] {
        let Some(_holder) = Holder::new(&s.dir().join(held)) else {
            skip("flock (util-linux) not installed");
            return;
        };
        // Both answers at once: each waits its own deadline.
        let out = parallel(2, |i| {
            s.user("a@example.com")
                .env("OVERLIMIT_FAILCLOSED", if i == 0 { "" } else { "1" })
        });
        for (o, code) in out.iter().zip([112, 111]) {
            assert_eq!(o.code, Some(code), "{held} held: {o:?}");
            logged(o, "lock not granted");
            assert!(
                o.elapsed >= Duration::from_millis(900) && o.elapsed < Duration::from_secs(3),
                "{held} held: {o:?}"
            );
        }
    }
    // Neither counter moved: a recipient counts on all its counters or none.
    assert_eq!(status(&s, "a@example.com").0, 1);
    assert_eq!(status(&s, "@example.com").1, 1);
}

// ---- Full disk -----------------------------------------------------------------

/// A small tmpfs mounted at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);
impl Tmpfs {
    /// A tmpfs of `size` on the new directory `name` in the sandbox; `None`,
    /// with the reason printed, where mounting is not allowed.
    fn in_sandbox(s: &Sandbox, name: &str, size: &str) -> Option<Tmpfs> {
        let dir = s.root.join(name);
        std::fs::create_dir(&dir).unwrap();
        match Tmpfs::mount(&dir, size) {
            Ok(m) => Some(m),
            Err(why) => {
                skip(&format!("cannot mount a tmpfs: {why}"));
                None
            }
        }
    }

    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("not root".into());
        }
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("overlimit-test")
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

/// The classic count of `client` by `overlimit status --json` on the
/// counter directory `dir`, which fails on a counter that does not parse.
fn count_in(s: &Sandbox, dir: &Path, client: &str) -> u64 {
    let o = s
        .admin(&["status", "--json", client])
        .env("OVERLIMITDIR", dir)
        .run();
    assert_eq!(o.code, Some(0), "{o:?}");
    json_number(&o.stdout, "count")
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Blocks free for an unprivileged writer on the filesystem holding `dir`.
fn free_blocks(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a struct we own for the answer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail
}

/// Fills every free block of the filesystem holding `dir`; the file is
/// `.filler` in `dir` (a dot file: no counter).
fn fill_every_block(dir: &Path) -> File {
    let mut filler = File::create(dir.join(".filler")).unwrap();
    let block = [b'F'; 4096];
    let full = loop {
        if let Err(e) = filler.write_all(&block) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    filler
}

#[test]
fn on_a_full_disk_existing_counters_still_count_and_new_clients_fail_open() {
    let s = Sandbox::with_limits(":100\n");
    let Some(fs) = Tmpfs::in_sandbox(&s, "small", "256k") else {
        return;
    };
    let dir = fs.0.clone();
    let call = |user: &str| s.user(user).env("OVERLIMITDIR", &dir);
    assert_eq!(call("old@example.com").code(), 112);
    let filler = fill_every_block(&dir);
    // A rewrite in place needs no new block.
    for _ in 0..3 {
        let o = call("old@example.com").run();
        assert_eq!((o.code, o.stderr.as_str()), (Some(112), ""), "{o:?}");
    }
    // A new counter cannot be written: fail open (or 111), with the reason.
    fails_open_or_closed(|| call("new@example.com"), "No space left on device");
    // Nothing is damaged: every file in the directory reads as a counter.
    assert_eq!(count_in(&s, &dir, "old@example.com"), 4);
    let all = s.admin(&["status"]).env("OVERLIMITDIR", &dir).run();
    assert_eq!(all.code, Some(0), "{all:?}");
    // With room again, the new client counts from zero. The blocks come back
    // once no process holds the file: a child another test thread is forking
    // may hold a copy of the descriptor until its exec.
    drop(filler);
    std::fs::remove_file(dir.join(".filler")).unwrap();
    let started = Instant::now();
    while free_blocks(&dir) < 16 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "space never freed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = call("new@example.com").run();
    assert_eq!((o.code, o.stderr.as_str()), (Some(112), ""), "{o:?}");
    assert_eq!(count_in(&s, &dir, "new@example.com"), 1);
}

#[test]
fn on_a_full_disk_a_user_whose_domain_counter_is_new_rises_on_neither_and_the_log_says_so() {
    let s = Sandbox::with_limits(":100\n");
    let Some(fs) = Tmpfs::in_sandbox(&s, "small", "256k") else {
        return;
    };
    let dir = fs.0.clone();
    let call = || s.user("u@shop.example").env("OVERLIMITDIR", &dir);
    assert_eq!(call().code(), 112);
    let _filler = fill_every_block(&dir);
    // The domain gets a line: its counter is new and needs a block, while
    // the user's is rewritten in place. (The bug: the user's count rose, and
    // the log said the recipient passed uncounted.)
    s.limits(":100\n@shop.example:1000\n");
    fails_open_or_closed(
        call,
        "No space left on device (os error 28); no counter changed",
    );
    assert_eq!(count_in(&s, &dir, "u@shop.example"), 1);
}

/// After I/O errors ext4 and XFS remount themselves read-only
/// (`errors=remount-ro`); every write then fails with EROFS. A remount of the
/// tmpfs provokes the same.
#[test]
fn a_counter_directory_on_a_filesystem_gone_read_only_fails_open_and_keeps_its_counts() {
    let s = Sandbox::with_limits(":100\n@example.com:1000\n");
    let Some(fs) = Tmpfs::in_sandbox(&s, "ro", "1m") else {
        return;
    };
    let dir = fs.0.clone();
    let call = |user: &str| s.user(user).env("OVERLIMITDIR", &dir);
    for _ in 0..2 {
        assert_eq!(call("old@example.com").code(), 112);
    }
    let remount = |how: &str| {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "remount {how}: {o:?}");
    };
    remount("ro");
    fails_open_or_closed(|| call("old@example.com"), "Read-only file system");
    fails_open_or_closed(|| call("new@example.com"), "Read-only file system");
    // The counts are where they were, readable; writable again, they go on.
    let count = |client: &str| count_in(&s, &dir, client);
    assert_eq!((count("old@example.com"), count("@example.com")), (2, 2));
    remount("rw");
    assert_eq!(call("old@example.com").code(), 112);
    assert_eq!((count("old@example.com"), count("@example.com")), (3, 3));
}

/// Where mounting is not allowed, a write error can still be provoked: a
/// file-size limit (`softlimit -f` in a run script) makes the kernel cut a
/// write short and raise SIGXFSZ.
#[test]
fn a_file_size_limit_below_a_counter_fails_open_and_tears_no_counter() {
    let Some(prlimit) = tool(&["/usr/bin/prlimit", "/bin/prlimit"]) else {
        skip("prlimit (util-linux) not installed");
        return;
    };
    let s = Sandbox::with_limits(":100,100/1h\n@example.com:1000\n");
    for _ in 0..3 {
        assert_eq!(s.user("old@example.com").code(), 112);
    }
    let before = std::fs::read(s.dir().join("old@example.com")).unwrap();
    let domain_before = std::fs::read(s.dir().join("@example.com")).unwrap();
    // Below the counters' size, above nothing: an existing counter cannot be
    // rewritten, a new one cannot be written at all.
    let limited = |user: &str| wrapped(&s, user, &[prlimit, "--fsize=40"]);
    fails_open_or_closed(|| limited("old@example.com"), "file size limit");
    fails_open_or_closed(|| limited("new@example.com"), "file size limit");
    // Neither the user's nor the domain's counter changed by a byte.
    assert_eq!(
        std::fs::read(s.dir().join("old@example.com")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read(s.dir().join("@example.com")).unwrap(),
        domain_before
    );
    // Without the limit, counting goes on from where it was.
    assert_eq!(s.user("old@example.com").code(), 112);
    assert_eq!(status(&s, "old@example.com"), (4, 4));
    assert_eq!(status(&s, "@example.com").0, 4);
}

// ---- The counter directory -------------------------------------------------------

#[test]
fn a_missing_or_unusable_counter_directory_fails_open_with_a_log_line() {
    let s = Sandbox::with_limits(":100\n");
    let missing = s.root.join("missing");
    fails_open_or_closed(
        || s.user("a@example.com").env("OVERLIMITDIR", &missing),
        "No such file or directory",
    );
    let file = s.root.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    fails_open_or_closed(
        || s.user("a@example.com").env("OVERLIMITDIR", &file),
        "Not a directory",
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    // Unwritable: root would not notice, so the plug-in runs as nobody.
    chmod(&s.dir(), 0o000);
    if as_nobody(&s, "a@example.com").is_some() {
        fails_open_or_closed(
            || as_nobody(&s, "a@example.com").unwrap(),
            "Permission denied",
        );
    }
    chmod(&s.dir(), 0o755);
    assert!(s.counter_files().is_empty());
}

// ---- The control file ------------------------------------------------------------

#[test]
fn a_missing_control_file_leaves_every_client_unlimited_and_counted() {
    let s = Sandbox::new();
    for _ in 0..3 {
        let o = s.user("a@example.com").run();
        assert_eq!((o.code, o.stderr.as_str()), (Some(112), ""), "{o:?}");
    }
    assert_eq!(status(&s, "a@example.com").0, 3);
}

#[test]
fn an_unreadable_control_file_is_an_internal_error_not_unlimited() {
    let s = Sandbox::with_limits(":1\n");
    chmod(&s.control(), 0o000);
    // nobody may write counters, so only the control file is at fault.
    chmod(&s.dir(), 0o777);
    if as_nobody(&s, "a@example.com").is_none() {
        return;
    }
    fails_open_or_closed(
        || as_nobody(&s, "a@example.com").unwrap(),
        "Permission denied",
    );
    assert!(s.counter_files().is_empty(), "nothing counted");
}

#[test]
fn a_control_file_that_is_a_directory_a_fifo_or_dev_zero_is_answered_at_once() {
    let s = Sandbox::new();
    std::fs::create_dir(s.control()).unwrap();
    fails_open_or_closed(|| s.user("a@example.com"), "not a regular file");
    let fifo = s.root.join("fifo");
    mkfifo(&fifo);
    fails_open_or_closed(
        || s.user("a@example.com").env("RELAYLIMITS", &fifo),
        "not a regular file",
    );
    fails_open_or_closed(
        || s.user("a@example.com").env("RELAYLIMITS", "/dev/zero"),
        "not a regular file",
    );
}

/// The plug-in under a cap on its data segment and heap (util-linux
/// prlimit), so that one holding the file in memory would fail.
fn capped(s: &Sandbox, user: &str, bytes: u64) -> Option<Run> {
    let prlimit = tool(&["/usr/bin/prlimit", "/bin/prlimit"])?;
    Some(wrapped(s, user, &[prlimit, &format!("--data={bytes}")]))
}

#[test]
fn a_hundred_megabytes_of_garbage_as_control_file_is_read_in_bounded_time_and_memory() {
    let s = Sandbox::new();
    // Garbage with newlines, colons, NULs and high bytes: many short lines,
    // some long ones, no valid entry for the client. One 1 MiB block
    // written 100 times is quick to make.
    let mut rng = Rng(0x5eed);
    let block: Vec<u8> = (0..1 << 20)
        .map(|i| match rng.below(64) {
            0 => b'\n',
            1 => b':',
            2 if i % 3 == 0 => b'#',
            _ => rng.below(256) as u8,
        })
        .collect();
    let mut f = File::create(s.control()).unwrap();
    for _ in 0..100 {
        f.write_all(&block).unwrap();
    }
    drop(f);
    let o = match capped(&s, "a@example.com", 16 << 20) {
        Some(run) => run.run(),
        None => {
            eprintln!("no memory cap: prlimit (util-linux) not installed");
            s.user("a@example.com").run()
        }
    };
    assert_eq!(
        o.code,
        Some(112),
        "{}",
        &o.stderr[..o.stderr.len().min(2000)]
    );
    assert!(o.elapsed < Duration::from_secs(15), "{:?}", o.elapsed);
    let lines = o.stderr.lines().count();
    assert!(lines <= 20, "bad lines flood the log: {lines} lines");
}

// ---- Planted links ------------------------------------------------------------

#[test]
fn symlinks_and_hard_links_planted_in_the_counter_directory_are_neither_followed_nor_written() {
    let s = Sandbox::with_limits(":100\n@links.example:1000\n");
    let outside = s.root.join("outside");
    std::fs::write(&outside, "precious\n").unwrap();
    let other = s.root.join("other-dir");
    std::fs::create_dir(&other).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(&outside)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let plant = |name: &str, how: u8| {
        let at = s.dir().join(name);
        match how {
            0 => std::os::unix::fs::symlink(&outside, &at).unwrap(),
            1 => std::fs::hard_link(&outside, &at).unwrap(),
            2 => std::os::unix::fs::symlink(&other, &at).unwrap(),
            _ => mkfifo(&at),
        }
    };
    // The user's own counter, a domain's shared counter, an address's.
    plant("sym@example.com", 0);
    plant("hard@example.com", 1);
    plant("dir@example.com", 2);
    plant("@links.example", 0);
    plant("192.0.2.7", 1);
    // A FIFO would block an open without O_NONBLOCK: the session would hang.
    plant("fifo@example.com", 3);
    let calls: [(&str, &str); 6] = [
        ("fifo@example.com", "not a regular file"),
        ("sym@example.com", "left alone"),
        ("hard@example.com", "hard links"),
        ("dir@example.com", "left alone"),
        ("a@links.example", "left alone"),
        ("192.0.2.7", "hard links"),
    ];
    for (client, why) in calls {
        let make = || {
            if client.contains('@') {
                s.user(client)
            } else {
                s.ip(client)
            }
        };
        for (failclosed, code) in [("", 112), ("1", 111)] {
            let o = make().env("OVERLIMIT_FAILCLOSED", failclosed).run();
            assert_eq!(o.code, Some(code), "{client}: {o:?}");
            // A symlink is refused by the open itself (O_NOFOLLOW: "Too many
            // levels of symbolic links"), or as not a regular file.
            assert!(
                o.stderr.contains(why) || o.stderr.contains("symbolic links"),
                "{client}: {o:?}"
            );
        }
    }
    // The sweep and `reset` leave them alone too.
    // Each is named on stderr, and the exit says something was wrong.
    let o = s.sweep(&[]).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert_eq!(
        o.stderr.lines().count(),
        6,
        "one line per planted file: {o:?}"
    );
    let o = s
        .admin(&["reset", "sym@example.com", "hard@example.com"])
        .run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(
        o.stderr.contains("symbolic links") && o.stderr.contains("hard links"),
        "{o:?}"
    );
    assert_eq!(std::fs::read(&outside).unwrap(), b"precious\n");
    let m = std::fs::metadata(&outside).unwrap();
    assert_eq!(m.modified().unwrap(), old);
    assert_eq!(m.nlink(), 3, "both hard links still there");
    assert!(std::fs::read_dir(&other).unwrap().next().is_none());
    let m = std::fs::symlink_metadata(s.dir().join("fifo@example.com")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()),
        "the FIFO is left alone"
    );
    for name in ["sym@example.com", "dir@example.com", "@links.example"] {
        let m = std::fs::symlink_metadata(s.dir().join(name)).unwrap();
        assert!(m.file_type().is_symlink(), "{name} still the planted link");
    }
}

// ---- Memory caps ----------------------------------------------------------------

/// The bytes the program's loadable segments take once mapped (ELF64,
/// little-endian: the PT_LOAD entries of its program header table); `None`
/// for a dynamically linked program (a PT_INTERP entry), whose loader and
/// libraries would take more.
fn image_size(program: &str) -> Option<u64> {
    let elf = std::fs::read(program).unwrap();
    let u16_at = |at: usize| u64::from(u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let (table, entry, count) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let headers: Vec<usize> = (0..count).map(|i| (table + i * entry) as usize).collect();
    let kind = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    if headers.iter().any(|&at| kind(at) == 3) {
        return None;
    }
    let loaded = headers.iter().filter(|&&at| kind(at) == 1);
    Some(
        loaded
            .map(|&at| u64_at(at + 0x28).div_ceil(4096) * 4096)
            .sum(),
    )
}

/// Run scripts cap qmail-smtpd's memory with `softlimit -m 2000000`, which
/// sets the address space, data and stack limits (and locked memory), and
/// the plug-in inherits them. The release image is about 1.3 MB, so it must
/// count, look up a compiled or a long text control file, and wait for a
/// lock (a thread) in the 700,000 bytes left. The cap here is the image
/// under test (a debug build's is larger) plus those 700,000; `make bench`
/// checks the release build under the real 2,000,000.
#[test]
fn the_plugin_works_under_softlimit_m_2000000() {
    let Some(prlimit) = tool(&["/usr/bin/prlimit", "/bin/prlimit"]) else {
        skip("prlimit (util-linux) not installed");
        return;
    };
    let Some(image) = image_size(PLUGIN) else {
        skip("the plug-in is not a static binary on this target");
        return;
    };
    let cap = image + 700_000;
    let limits = ["as", "data", "stack"].map(|l| format!("--{l}={cap}"));
    let softlimit = [prlimit, &limits[0], &limits[1], &limits[2]];
    let mut text = String::from(":1000\n");
    for i in 0..20_000 {
        text.push_str(&format!("user{i}@example.com:{}/1h,500\n", 100 + i % 900));
    }
    text.push_str("capped@example.com:3\n");
    let s = Sandbox::with_limits(&text);
    let call = || wrapped(&s, "capped@example.com", &softlimit);
    for compiled in [false, true] {
        if compiled {
            assert_eq!(s.admin(&["compile"]).code(), 0);
        }
        let _ = std::fs::remove_file(s.dir().join("capped@example.com"));
        for _ in 0..3 {
            let o = call().run();
            assert_eq!((o.code, o.stderr.as_str()), (Some(112), ""), "{o:?}");
        }
        let o = call().run();
        assert_eq!(o.code, Some(113), "compiled {compiled}: {o:?}");
    }
    // The lock waiter's thread fits too: a refusal to start it would be logged
    // as "start a lock waiter", not "lock not granted".
    let Some(_holder) = Holder::new(&s.dir().join("capped@example.com")) else {
        skip("flock (util-linux) not installed");
        return;
    };
    let o = call().run();
    assert_eq!(o.code, Some(112), "{o:?}");
    logged(&o, "lock not granted");
}

// ---- Signals, descriptors and memory ----------------------------------------------

/// A wrapper that runs its arguments through `sh -c SCRIPT` (the arguments
/// after the script's own are `"$@"`, after a `--` that `wrapped` adds).
fn shell<'a>(script: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut w = vec!["/bin/sh", "-c", script, "sh"];
    w.extend_from_slice(args);
    w
}

#[test]
fn a_log_file_at_its_size_limit_loses_the_line_but_no_sigxfsz_ends_the_plugin() {
    let Some(prlimit) = tool(&["/usr/bin/prlimit", "/bin/prlimit"]) else {
        skip("prlimit (util-linux) not installed");
        return;
    };
    let s = Sandbox::with_limits(":1\n");
    assert_eq!(s.user("a@example.com").code(), 112);
    // stderr appends to a file already at the file-size limit, as a log
    // file under `softlimit -f` would be; the refusal's line cannot fit.
    let log = s.root.join("log");
    std::fs::write(&log, vec![b'L'; 4096]).unwrap();
    let log_arg = log.to_str().unwrap();
    let script = "log=$1; shift 2; exec \"$@\" 2>>\"$log\"";
    let o = wrapped(
        &s,
        "a@example.com",
        &shell(script, &[log_arg, "--", prlimit, "--fsize=4096"]),
    )
    .run();
    // The bug: killed by SIGXFSZ (exit 153 in a shell), which qmail-smtpd
    // answers with 421 and a dropped session.
    assert_eq!(o.code, Some(113), "{o:?}");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 4096);
    assert_eq!(status(&s, "a@example.com").0, 1);
}

#[test]
fn with_descriptors_0_to_2_closed_the_plugin_and_its_notifier_get_dev_null() {
    let s = Sandbox::with_limits(":1\n");
    assert_eq!(s.user("a@example.com").code(), 112);
    // The notifier says what its stdout and stderr are. It is written by a
    // child shell (see `script` in tests/windows.rs: no "Text file busy").
    let seen = s.root.join("seen");
    let notifier = s.root.join("notify");
    let body = format!(
        "#!/bin/sh\necho \"$(readlink /proc/$$/fd/1) $(readlink /proc/$$/fd/2)\" >> '{}'\n",
        seen.display()
    );
    let written = Command::new("/bin/sh")
        .args(["-c", "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\""])
        .arg("sh")
        .arg(body)
        .arg(&notifier)
        .status()
        .unwrap();
    assert!(written.success());
    // The bug: the plug-in, which has no Rust runtime to do it, left them
    // closed, so the first file it or its notifier opened became stderr.
    let o = wrapped(
        &s,
        "a@example.com",
        &shell("shift; exec \"$@\" <&- >&- 2>&-", &[]),
    )
    .env("OVERLIMIT_NOTIFY", &notifier)
    .run();
    assert_eq!(o.code, Some(113), "{o:?}");
    let started = Instant::now();
    while !seen.exists() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let seen = std::fs::read_to_string(&seen).unwrap_or_default();
    assert_eq!(seen, "/dev/null /dev/null\n");
    assert_eq!(status(&s, "a@example.com").0, 1);
}

#[test]
fn memory_that_runs_out_is_an_internal_error_not_sigabrt() {
    let Some(prlimit) = tool(&["/usr/bin/prlimit", "/bin/prlimit"]) else {
        skip("prlimit (util-linux) not installed");
        return;
    };
    let Some(image) = image_size(PLUGIN) else {
        skip("the plug-in is not a static binary on this target");
        return;
    };
    let s = Sandbox::with_limits(":1000\nbig@example.com:5\n");
    assert_eq!(s.admin(&["compile"]).code(), 0);
    // A record claiming a megabyte of limits, under the memory cap of a run
    // script (see `the_plugin_works_under_softlimit_m_2000000`): it cannot
    // be allocated. The bug: Rust's abort, exit 134 by SIGABRT.
    let mut cdb = s.control().into_os_string();
    cdb.push(".cdb");
    damage_cdb_record(Path::new(&cdb), b"big@example.com", 1 << 20);
    let cap = image + 700_000;
    let limits = ["as", "data", "stack"].map(|l| format!("--{l}={cap}"));
    let softlimit = [prlimit, &limits[0], &limits[1], &limits[2]];
    for (failclosed, code) in [("", 112), ("1", 111)] {
        let o = wrapped(&s, "big@example.com", &softlimit)
            .env("OVERLIMIT_FAILCLOSED", failclosed)
            .run();
        assert_eq!(o.code, Some(code), "{o:?}");
        assert!(o.stderr.starts_with("rcptcheck-overlimit: "), "{o:?}");
    }
}

// ---- Ownership -----------------------------------------------------------------------

#[test]
fn a_counter_root_creates_goes_to_the_directorys_owner_so_the_smtpd_user_keeps_counting() {
    if !is_root() {
        skip("not root, cannot create a counter as root for another account");
        return;
    }
    let s = Sandbox::with_limits(":100\n");
    // The smtpd user (nobody here) owns the directory; its group is one
    // nobody is not in, as when the group is the admin tools'.
    let dir = s.dir();
    std::os::unix::fs::chown(&dir, Some(65534), Some(4242)).unwrap();
    chmod(&dir, 0o2770);
    // Root runs the plug-in by hand, as the man page's EXAMPLES do. (The bug:
    // a root-owned counter, which nobody could not open, so that client
    // passed uncounted until the sweep.)
    assert_eq!(s.user("a@example.com").code(), 112);
    let m = std::fs::metadata(dir.join("a@example.com")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 4242, 0o660));
    let Some(nobody) = as_nobody(&s, "a@example.com") else {
        return;
    };
    let o = nobody.run();
    assert_eq!((o.code, o.stderr.as_str()), (Some(112), ""), "{o:?}");
    assert_eq!(status(&s, "a@example.com").0, 2);
}

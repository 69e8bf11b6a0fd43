//! Pins issue 13's history: the real plug-in appends one JSON line to
//! OVERLIMITDIR/.journal when a limit goes over and one when it has room
//! again, nothing in between; the journal is never read as a counter; it is
//! rotated to .journal.1 at its size cap; `overlimit history` pairs the lines
//! into episodes, filters by client and `--since`, and prints JSON.

mod common;
use common::*;
use std::time::{Duration, Instant};

const GO_ON: i32 = 112;
const OVER: i32 = 113;

fn journal(s: &Sandbox) -> Vec<String> {
    let text = std::fs::read_to_string(s.dir().join(".journal")).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

/// Sends recipients for `user` until one is refused (at most `max`).
fn send_until_refused(s: &Sandbox, user: &str, max: usize) {
    for _ in 0..max {
        if s.user(user).code() == OVER {
            return;
        }
    }
    panic!("{user} was never refused");
}

/// Sends for `user` until accepted again, at most `within`.
fn send_until_accepted(s: &Sandbox, user: &str, within: Duration) {
    let start = Instant::now();
    while start.elapsed() < within {
        if s.user(user).code() == GO_ON {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{user} never had room again");
}

#[test]
fn an_episode_is_two_journal_lines_and_one_history_entry() {
    let s = Sandbox::with_limits("a@example.com:2/2s\nb@example.com:5\n");
    assert_eq!(s.user("b@example.com").code(), GO_ON);
    send_until_refused(&s, "a@example.com", 3);
    // More refusals in the same episode write nothing more.
    assert_eq!(s.user("a@example.com").code(), OVER);
    let lines = journal(&s);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("\"event\":\"over\""), "{lines:?}");
    assert!(
        lines[0].contains("\"client\":\"a@example.com\""),
        "{lines:?}"
    );
    assert!(lines[0].contains("\"limit\":\"2/2s\""), "{lines:?}");
    assert!(lines[0].contains("\"count\":2"), "{lines:?}");

    send_until_accepted(&s, "a@example.com", Duration::from_secs(10));
    let lines = journal(&s);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains("\"event\":\"free\""), "{lines:?}");

    let o = s.admin(&["history"]).run();
    assert_eq!((o.code, o.stderr.as_str()), (Some(0), ""), "{o:?}");
    assert!(
        o.stdout.starts_with("a@example.com 2/2s: 1 episode, "),
        "{o:?}"
    );
    assert!(o.stdout.contains("2 counted"), "{o:?}");
    assert!(!o.stdout.contains("b@example.com"), "{o:?}");

    let o = s.admin(&["history", "--json", "a@example.com"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    let json = o.stdout.trim();
    assert!(
        json.starts_with("[{\"client\":\"a@example.com\",\"limit\":\"2/2s\""),
        "{o:?}"
    );
    let over = json_number(json, "over");
    let free = json_number(json, "free");
    assert!(free >= over && free - over <= 12, "{o:?}");

    let o = s.admin(&["history", "--json", "b@example.com"]).run();
    assert_eq!(o.stdout.trim(), "[]", "{o:?}");
}

#[test]
fn a_second_episode_counts_twice_and_since_filters_by_end() {
    let s = Sandbox::with_limits("a@example.com:1/1s\n");
    for _ in 0..2 {
        send_until_refused(&s, "a@example.com", 2);
        send_until_accepted(&s, "a@example.com", Duration::from_secs(10));
    }
    let o = s.admin(&["history", "--since", "1h"]).run();
    assert!(
        o.stdout.starts_with("a@example.com 1/1s: 2 episodes"),
        "{o:?}"
    );
    // An old episode, ended long ago, is outside --since 1d but listed without.
    let old = "{\"at\":1000,\"event\":\"over\",\"client\":\"old@example.com\",\"limit\":\"3\",\"count\":3}\n\
               {\"at\":2000,\"event\":\"free\",\"client\":\"old@example.com\",\"limit\":\"3\",\"count\":0}\n";
    std::fs::write(s.dir().join(".journal.1"), old).unwrap();
    let o = s.admin(&["history", "--since", "1d"]).run();
    assert!(!o.stdout.contains("old@example.com"), "{o:?}");
    let o = s.admin(&["history", "old@example.com"]).run();
    assert!(
        o.stdout
            .contains("old@example.com 3: 1 episode, 16m40s over in all"),
        "{o:?}"
    );
    assert!(
        o.stdout
            .contains("1970-01-01 00:16:40Z to 1970-01-01 00:33:20Z"),
        "{o:?}"
    );
}

#[test]
fn the_journal_is_never_taken_for_a_counter_and_the_sweep_ends_classic_episodes() {
    let s = Sandbox::with_limits("a@example.com:1\n");
    send_until_refused(&s, "a@example.com", 2);
    assert!(s.dir().join(".journal").exists());
    assert_eq!(s.counter_files(), ["a@example.com"]);
    let o = s.admin(&["status", "--json"]).run();
    assert_eq!((o.code, o.stderr.as_str()), (Some(0), ""), "{o:?}");
    assert!(!o.stdout.contains("journal"), "{o:?}");
    let o = s.admin(&["check"]).run();
    assert!(!o.stderr.contains("journal"), "{o:?}");
    let o = s.sweep(&[]).run();
    assert_eq!((o.code, o.stderr.as_str()), (Some(0), ""), "{o:?}");
    // The sweep's reset of the classic count ends the episode, and says so.
    let lines = journal(&s);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains("\"event\":\"free\",\"client\":\"a@example.com\",\"limit\":\"1\""),
        "{lines:?}"
    );
    assert_eq!(s.user("a@example.com").code(), GO_ON);
    assert_eq!(journal(&s).len(), 2, "no line while there is room");
}

#[test]
fn the_journal_rotates_once_at_its_cap() {
    let s = Sandbox::with_limits("a@example.com:1\n");
    let line = "{\"at\":1000,\"event\":\"over\",\"client\":\"filler@example.com\",\"limit\":\"3\",\"count\":3}\n";
    let filler = line.repeat((1 << 20) / line.len() + 1);
    std::fs::write(s.dir().join(".journal"), &filler).unwrap();
    std::fs::write(s.dir().join(".journal.1"), "to be replaced\n").unwrap();
    send_until_refused(&s, "a@example.com", 2);
    let older = std::fs::read_to_string(s.dir().join(".journal.1")).unwrap();
    assert!(
        older.starts_with(&filler),
        "the full journal became .journal.1"
    );
    assert!(!older.contains("to be replaced"));
    // The line that noticed the cap went to the file it had open.
    assert!(
        older.ends_with("\"count\":1}\n"),
        "{}",
        &older[older.len() - 200..]
    );
    // Both files together stay bounded; the next episode starts a new one.
    assert!(!s.dir().join(".journal").exists() || journal(&s).is_empty());
    let o = s.admin(&["history", "a@example.com"]).run();
    assert!(o.stdout.starts_with("a@example.com 1: 1 episode"), "{o:?}");
}

#[test]
fn bad_input_gets_a_clear_answer() {
    let s = Sandbox::with_limits("a@example.com:1\n");
    let o = s.admin(&["history", "--since", "soon"]).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("--since soon: not a duration"), "{o:?}");
    let o = s.admin(&["history", "--bogus"]).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("unknown flag --bogus"), "{o:?}");
    std::fs::write(s.dir().join(".journal"), "not json\n\u{0}\u{1}\n").unwrap();
    let o = s.admin(&["history"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(
        o.stderr.contains("2 journal lines were not events"),
        "{o:?}"
    );
    assert_eq!(o.stdout.trim(), "no episodes recorded", "{o:?}");
    let o = s.admin(&["history", "--help"]).run();
    assert!(o.stdout.contains("usage: overlimit history"), "{o:?}");
}

#[test]
fn check_replay_judges_recorded_episodes_and_counters_against_an_edited_file() {
    let s = Sandbox::with_limits("a@example.com:3/1h\nb@example.com:10/1h\nc@example.com:2\n");
    send_until_refused(&s, "a@example.com", 4);
    send_until_refused(&s, "b@example.com", 11);
    send_until_refused(&s, "c@example.com", 3);
    for _ in 0..4 {
        assert_eq!(s.user("d@example.com").code(), GO_ON);
    }
    // The edit: a gets more room, b less, c none, d a limit it is over.
    let edited = s.dir().parent().unwrap().join("relaylimits.new");
    std::fs::write(
        &edited,
        "a@example.com:5/1h\nb@example.com:5/1h\nd@example.com:3\n",
    )
    .unwrap();
    let o = s
        .admin(&["check", "--replay"])
        .env("RELAYLIMITS", &edited)
        .run();
    assert_eq!(o.code, Some(0), "{o:?}");
    let out = &o.stdout;
    assert!(
        out.contains("would refuse: b@example.com over 10/1h with 10 counted at ")
            && out.contains(": refused by 5/1h as well"),
        "{o:?}"
    );
    assert!(
        out.contains("unknown: a@example.com over 3/1h with 3 counted at ")
            && out.contains("the journal cannot tell whether 5/1h would have held"),
        "{o:?}"
    );
    assert!(
        out.contains("would pass: c@example.com over 2 with 2 counted at "),
        "{o:?}"
    );
    // A counter is judged on what it keeps: d's classic count (it kept no
    // window while unlimited), b's 1h window.
    assert!(
        out.contains("over now: d@example.com 3 (4 counted)"),
        "{o:?}"
    );
    assert!(
        out.contains("over now: b@example.com 5/1h (10 counted)"),
        "{o:?}"
    );
    assert!(
        out.contains("replay: 3 episodes: 1 would be refused, 1 cannot be told, 1 unlimited; 2 counters over a limit now"),
        "{o:?}"
    );
    // A journal named on the command line; the live file was not touched.
    let copy = s.dir().parent().unwrap().join("saved-journal");
    std::fs::copy(s.dir().join(".journal"), &copy).unwrap();
    std::fs::remove_file(s.dir().join(".journal")).unwrap();
    let o = s
        .admin(&["check", "--replay", copy.to_str().unwrap()])
        .env("RELAYLIMITS", &edited)
        .run();
    assert!(
        o.stdout.contains("replay: 3 episodes: 1 would be refused"),
        "{o:?}"
    );
    let o = s.admin(&["check", "--replay", "a", "b"]).run();
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("unexpected argument b"), "{o:?}");
    let o = s
        .admin(&["check", "--replay", "/nonexistent/dir/journal"])
        .env("RELAYLIMITS", &edited)
        .run();
    assert!(o.stdout.contains("replay: 0 episodes"), "{o:?}");
}

#[test]
fn reset_ends_the_episodes_and_the_block_of_what_it_removes() {
    let s = Sandbox::with_limits("a@example.com:1\n");
    send_until_refused(&s, "a@example.com", 2);
    let o = s.admin(&["block", "a@example.com"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    let o = s.admin(&["reset", "a@example.com"]).run();
    assert_eq!((o.code, o.stderr.as_str()), (Some(0), ""), "{o:?}");
    let lines = journal(&s);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[2].contains("\"event\":\"free\",\"client\":\"a@example.com\",\"limit\":\"1\""),
        "{lines:?}"
    );
    assert!(lines[3].contains("\"event\":\"unblock\""), "{lines:?}");
    let o = s.admin(&["history"]).run();
    assert!(!o.stdout.contains("no end recorded"), "{o:?}");
    assert_eq!(s.user("a@example.com").code(), GO_ON);
}

#[test]
fn a_fifo_in_place_of_the_journal_neither_hangs_nor_changes_the_decision() {
    let s = Sandbox::with_limits("a@example.com:1\n");
    let fifo = std::ffi::CString::new(
        s.dir()
            .join(".journal")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert_eq!(s.user("a@example.com").code(), GO_ON);
    let o = s.user("a@example.com").run();
    assert_eq!(o.code, Some(OVER), "{o:?}");
    // Opening a FIFO without a reader fails at once (ENXIO): logged, naming it.
    assert!(o.stderr.contains("/overlimit/.journal: "), "{o:?}");
    assert!(
        o.stderr.contains("refused a@example.com: limit 1 reached"),
        "{o:?}"
    );
}

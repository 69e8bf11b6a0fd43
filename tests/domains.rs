//! Pins which line gives a client its limits beyond its own (issue 3):
//! `*@domain` per-user defaults, `@domain` shared aggregates (also under
//! concurrency), IPv4 and IPv6 ranges with the longest prefix winning, and
//! the precedence between them, read from the text and from its cdb.

mod common;
use common::*;

/// How many recipients `make` lets through before the first refusal; each
/// pass must be quiet, and more than `max` passes fail the test.
fn through(make: impl Fn() -> Run, max: u64) -> u64 {
    for n in 0..=max {
        let o = make().run();
        match o.code {
            Some(112) => assert_eq!((o.stderr.as_str(), o.fd4.as_str()), ("", ""), "{o:?}"),
            Some(113) => return n,
            _ => panic!("{o:?}"),
        }
    }
    panic!("more than {max} let through")
}

/// Asserts that `make` lets ten recipients through quietly: no line limits it.
fn unlimited(make: impl Fn() -> Run) {
    for _ in 0..10 {
        let o = make().run();
        assert_eq!(
            (o.code, o.stderr.as_str(), o.fd4.as_str()),
            (Some(112), "", ""),
            "{o:?}"
        );
    }
}

/// A number from a counter file: `total` or the first field of `refused`.
fn field(s: &Sandbox, file: &str, key: &str) -> u64 {
    let Some(bytes) = s.counter(file) else {
        return 0;
    };
    let text = String::from_utf8(bytes).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {file}: {text}"))
}

// ---- Domains ----------------------------------------------------------------

#[test]
fn each_user_of_a_star_domain_line_has_a_counter_of_its_own() {
    let s = Sandbox::with_limits("*@example.com:2\n:5\n");
    assert_eq!(through(|| s.user("a@example.com"), 10), 2);
    // Another user of the domain, in any case, starts from zero.
    assert_eq!(through(|| s.user("B@Example.COM"), 10), 2);
    // Other domains and users without a domain get the default.
    assert_eq!(through(|| s.user("c@example.org"), 10), 5);
    assert_eq!(through(|| s.user("web1"), 10), 5);
    assert_eq!(
        s.counter_files(),
        ["a@example.com", "b@example.com", "c@example.org", "web1"],
        "no shared counter without an @domain line"
    );
}

#[test]
fn a_users_own_line_beats_the_star_domain_line_which_beats_the_default() {
    // The own line comes first, so the last line does not simply win.
    let s = Sandbox::with_limits("boss@example.com:4\n*@example.com:2\n:1\n");
    assert_eq!(through(|| s.user("boss@example.com"), 10), 4);
    assert_eq!(through(|| s.user("clerk@example.com"), 10), 2);
    assert_eq!(through(|| s.user("clerk@example.org"), 10), 1);
}

#[test]
fn a_domain_aggregate_is_shared_and_checked_on_top_of_each_users_own_limit() {
    let s = Sandbox::with_limits("@example.com:5\n*@example.com:2\n:100\n");
    // a and b stop at their own limit; the domain has counted only what passed.
    assert_eq!(through(|| s.user("a@example.com"), 10), 2);
    assert_eq!(field(&s, "@example.com", "total"), 2);
    assert_eq!(through(|| s.user("b@example.com"), 10), 2);
    // c gets the one left in the domain, then the domain is full.
    assert_eq!(through(|| s.user("c@example.com"), 10), 1);
    let o = s.user("d@example.com").run();
    assert_eq!(o.code, Some(113), "{o:?}");
    assert!(
        o.stderr.contains("@example.com limit 5 reached (5 counted"),
        "the log names the domain's limit: {o:?}"
    );
    // Refused recipients raised no counter, own or shared; the attempts are
    // tallied on each user's own counter.
    assert_eq!(field(&s, "@example.com", "total"), 5);
    for (user, total) in [("a", 2), ("b", 2), ("c", 1), ("d", 0)] {
        let file = format!("{user}@example.com");
        assert_eq!(field(&s, &file, "total"), total, "{file}");
        assert_eq!(field(&s, &file, "refused"), 1, "{file}");
    }
    assert_eq!(field(&s, "@example.com", "refused"), 0);

    // The reply line says the domain's limit was reached, not the user's.
    let o = s.user("e@example.com").env("OVERLIMIT_REPLY", "451").run();
    assert_eq!(o.code, Some(113), "{o:?}");
    assert!(
        o.fd4
            .starts_with("451 4.7.1 Your domain example.com reached its limit of 5 recipients;"),
        "{o:?}"
    );
    let o = s.user("a@example.com").env("OVERLIMIT_REPLY", "451").run();
    assert!(
        o.fd4
            .starts_with("451 4.7.1 You reached your limit of 2 recipients;"),
        "{o:?}"
    );
}

#[test]
fn an_aggregate_line_gives_users_no_limit_of_their_own() {
    let s = Sandbox::with_limits("@EXAMPLE.org:3\n:1\n");
    // Each user still has the default; the domain line matches in any case.
    assert_eq!(through(|| s.user("a@example.org"), 10), 1);
    assert_eq!(through(|| s.user("B@Example.Org"), 10), 1);
    assert_eq!(field(&s, "@example.org", "total"), 2);
    assert_eq!(through(|| s.user("c@example.org"), 10), 1);
    assert_eq!(through(|| s.user("d@example.org"), 10), 0);
}

#[test]
fn domain_lines_never_apply_to_clients_known_by_address_or_without_a_domain() {
    let s = Sandbox::with_limits("@example.com:1\n*@example.com:1\n");
    unlimited(|| s.ip("192.0.2.1"));
    unlimited(|| s.user("example.com"));
}

#[test]
fn users_of_one_domain_in_parallel_share_the_aggregate_exactly() {
    let s = Sandbox::with_limits("@example.com:20\n*@example.com:0\n:1\n");
    let out = parallel(50, |i| s.user(&format!("user{}@example.com", i % 10)));
    let errors: Vec<&Outcome> = out
        .iter()
        .filter(|o| o.stderr.contains("internal error"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((count(&out, 112), count(&out, 113)), (20, 30));
    assert_eq!(field(&s, "@example.com", "total"), 20);
    let users: Vec<String> = (0..10).map(|i| format!("user{i}@example.com")).collect();
    let sum = |key| users.iter().map(|u| field(&s, u, key)).sum::<u64>();
    assert_eq!((sum("total"), sum("refused")), (20, 30));
    let o = s.admin(&["status", "--json", "@example.com"]).run();
    assert!(o.stdout.contains("\"count\":20"), "{o:?}");
}

// ---- Address ranges -----------------------------------------------------------

/// Clients and how many recipients each may send under `RANGES`.
const RANGES: &str = "\
10.1.2.0/24:3
10.1.0.0/16:2
10.0.0.0/8:1
:5
10.1.2.3:4
2001:db8:1:2::/64:7
2001:DB8:1::/48:6
2001:db8::/32:5
::ffff:172.16.0.0/108:2
";
const RANGE_CASES: &[(&str, u64)] = &[
    ("10.9.9.9", 1),
    ("10.1.9.9", 2),
    ("10.1.2.9", 3),
    ("10.1.2.3", 4),
    ("11.0.0.1", 5),
    ("2001:db8:ffff::1", 5),
    ("2001:0DB8:0001:0000::5", 6),
    ("2001:db8:1:2::7", 7),
    ("2001:db9::1", 5),
    ("172.16.5.5", 2),
    ("::ffff:10.1.2.10", 3),
];

#[test]
fn the_longest_matching_range_wins_for_ipv4_and_ipv6() {
    let s = Sandbox::with_limits(RANGES);
    for &(ip, n) in RANGE_CASES {
        assert_eq!(through(|| s.ip(ip), 10), n, "{ip}");
    }
    // Each address has its own counter, named in canonical form.
    assert_eq!(through(|| s.ip("10.9.9.8"), 10), 1);
    let files = s.counter_files();
    for name in ["10.9.9.8", "10.9.9.9", "2001:db8:1::5", "10.1.2.10"] {
        assert!(files.iter().any(|f| f == name), "{name} in {files:?}");
    }
}

#[test]
fn ranges_resolve_the_same_from_the_compiled_cdb() {
    let s = Sandbox::with_limits(RANGES);
    let o = s.admin(&["compile"]).run();
    assert_eq!(o.code, Some(0), "{o:?}");
    for &(ip, n) in RANGE_CASES {
        assert_eq!(through(|| s.ip(ip), 10), n, "{ip}");
    }
}

#[test]
fn an_ipv4_mapped_client_is_matched_by_ipv4_ranges_and_shares_the_ipv4_counter() {
    let s = Sandbox::with_limits("10.0.0.0/8:2\n:9\n");
    assert_eq!(s.ip("::ffff:10.1.2.3").code(), 112);
    // Where tcpserver gives only TCP6REMOTEIP.
    let o = s
        .plugin()
        .env("RELAYCLIENT", "")
        .env("TCP6REMOTEIP", "::FFFF:10.1.2.3")
        .run();
    assert_eq!(o.code, Some(112), "{o:?}");
    assert_eq!(s.ip("10.1.2.3").code(), 113);
    assert_eq!(s.counter_files(), ["10.1.2.3"]);
}

#[test]
fn a_range_with_host_bits_set_is_read_masked() {
    let s = Sandbox::with_limits("10.1.2.77/24:1\n:9\n");
    assert_eq!(through(|| s.ip("10.1.2.5"), 10), 1);
    assert_eq!(through(|| s.ip("10.1.3.5"), 10), 9);
}

#[test]
fn ranges_never_apply_to_authenticated_users_nor_across_address_families() {
    // The harness's users connect from 192.0.2.99: their name counts, not that.
    let s = Sandbox::with_limits("192.0.2.0/24:1\n::/0:1\n");
    unlimited(|| s.user("a@example.com"));
    // An IPv6 catch-all does not catch IPv4 clients, nor the reverse.
    unlimited(|| s.ip("198.51.100.1"));
    assert_eq!(through(|| s.ip("2001:db8::1"), 5), 1);
    let s = Sandbox::with_limits("0.0.0.0/0:1\n");
    unlimited(|| s.ip("2001:db8::1"));
    assert_eq!(through(|| s.ip("198.51.100.1"), 5), 1);
}

// ---- Issue 10: range aggregates and login spellings -------------------------------

/// Runs `check` with both the text and its cdb.
fn from_text_and_cdb(limits: &str, check: impl Fn(&Sandbox)) {
    for cdb in [false, true] {
        let s = Sandbox::with_limits(limits);
        if cdb {
            assert_eq!(s.admin(&["compile"]).code(), 0);
        }
        check(&s);
    }
}

#[test]
fn an_ipv6_client_rotating_through_its_64_gains_nothing() {
    from_text_and_cdb(":100\n@2001:db8:1::/64:3\n", |s| {
        for a in ["2001:db8:1::1", "2001:db8:1::2", "2001:db8:1:0:ffff::9"] {
            assert_eq!(s.ip(a).code(), 112, "{a}");
        }
        let o = s.ip("2001:db8:1::4").run();
        assert_eq!(o.code, Some(113), "{o:?}");
        assert!(
            o.stderr.contains("@2001:db8:1::/64 limit 3 reached"),
            "{o:?}"
        );
        // Outside the range, and its own counter per address as before.
        assert_eq!(s.ip("2001:db8:2::1").code(), 112);
        assert_eq!(field(s, "2001:db8:1::1", "total"), 1);
    });
}

#[test]
fn every_range_aggregate_holding_an_address_applies_on_top_of_its_own_limit() {
    from_text_and_cdb(
        "192.0.2.7:1\n@192.0.2.0/24:3\n@192.0.0.0/16:4\n@10.0.0.0/8:1\n",
        |s| {
            assert_eq!(through(|| s.ip("192.0.2.7"), 5), 1, "its own line");
            assert_eq!(s.ip("192.0.2.8").code(), 112);
            assert_eq!(s.ip("192.0.2.9").code(), 112);
            // The /24 is full (3), the /16 not yet.
            assert_eq!(s.ip("192.0.2.10").code(), 113);
            assert_eq!(s.ip("192.0.9.1").code(), 112);
            // Now the /16 is full too (4).
            assert_eq!(s.ip("192.0.9.2").code(), 113);
            // A refusal raised no counter.
            assert_eq!(field(s, "192.0.2.10", "total"), 0);
        },
    );
}

#[test]
fn a_login_spelled_with_percent_or_slash_cannot_escape_its_domain() {
    from_text_and_cdb("*@shop.example:10\n@shop.example:2\n", |s| {
        assert_eq!(s.user("web@shop.example").code(), 112);
        assert_eq!(s.user("web%shop.example").code(), 112);
        assert_eq!(s.user("web/shop.example").code(), 113);
        assert_eq!(s.user("other%Shop.Example").code(), 113);
        assert_eq!(field(s, "web@shop.example", "total"), 2, "one counter");
        // The refused attempt is tallied on other@'s own counter.
        let files = ["@shop.example", "other@shop.example", "web@shop.example"];
        assert_eq!(s.counter_files(), files);
    });
}

#[test]
fn overlimit_atchars_at_reads_logins_literally() {
    let s = Sandbox::with_limits("@shop.example:1\n");
    let run = |login: &str| s.user(login).env("OVERLIMIT_ATCHARS", "@");
    assert_eq!(run("web@shop.example").code(), 112);
    unlimited(|| run("web%shop.example"));
    // The same setting reads the control file's names alike.
    let s = Sandbox::with_limits("web%shop.example:1\n");
    let run = |login: &str| s.user(login).env("OVERLIMIT_ATCHARS", "@");
    assert_eq!(through(|| run("web%shop.example"), 3), 1);
    unlimited(|| run("web@shop.example"));
}

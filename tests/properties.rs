//! Property tests for everything that reads bytes an attacker or a careless
//! edit may control: the control-file parser, the counter-file reader and
//! the cdb reader never panic and never loop, and what the programs write
//! reads back as it was. The default case count runs in `cargo test`; the
//! long run is `PROPTEST_CASES=200000 cargo test --release --test properties`
//! (scripts/fuzz.sh).

use overlimit::cdb;
use overlimit::control::{clean, Entry, Key, Net};
use overlimit::counter::{Block, Counter, Window};
use overlimit::limits::{format_period, Item, Limits, MAX_WINDOWS};
use overlimit::store::{client_file, domain_file};
use proptest::prelude::*;
use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;

// ---- Strategies ----------------------------------------------------------------

/// Bytes that a control line is made of, weighted toward its syntax.
fn line_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(b"0123456789abcdefABCDEF:./,*@#smhdw \t\r-xyz".to_vec()),
        1 => any::<u8>(),
    ]
}

/// A valid item: classic or a window of a period the parser accepts.
fn item() -> impl Strategy<Value = Item> {
    let period = prop_oneof![
        (1u32..=60).prop_map(|n| n),
        (1u32..=60).prop_map(|n| n * 60),
        (1u32..=24).prop_map(|n| n * 3600),
        (1u32..=366).prop_map(|n| n * 86_400),
        1u32..=366 * 86_400,
    ];
    (1u64..1_000_000_000_000_000_000, prop::option::of(period))
        .prop_map(|(max, period)| Item { max, period })
}

fn limits() -> impl Strategy<Value = Limits> {
    prop::collection::vec(item(), 0..8).prop_map(|mut items| {
        // The parser refuses more than MAX_WINDOWS windows on a line.
        let mut windows = 0;
        items.retain(|i| {
            windows += usize::from(i.period.is_some());
            i.period.is_none() || windows <= MAX_WINDOWS
        });
        Limits { items }
    })
}

fn name_part() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._+-]{1,12}"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
        any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
        // Mapped IPv4, which the parser folds to IPv4.
        any::<u32>().prop_map(|a| IpAddr::V6(std::net::Ipv4Addr::from(a).to_ipv6_mapped())),
    ]
}

/// The left-hand side of a line, in the forms an administrator writes.
fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (name_part(), name_part()).prop_map(|(u, d)| format!("{u}@{d}")),
        name_part(),
        name_part().prop_map(|d| format!("*@{d}")),
        name_part().prop_map(|d| format!("@{d}")),
        ip().prop_map(|a| a.to_string()),
        (ip(), 0u8..=128).prop_map(|(a, l)| format!("{a}/{l}")),
    ]
}

/// A line as typed: key, limits, stray white space, maybe a comment.
fn typed_line() -> impl Strategy<Value = Vec<u8>> {
    (
        key_text(),
        limits(),
        " ?\t?",
        prop::option::of("[ -~]{0,20}"),
    )
        .prop_map(|(key, limits, ws, comment)| {
            let mut s = format!(
                "{ws}{key}{ws}:{ws}{}",
                limits.to_string().replace(',', ", ")
            );
            if let Some(c) = comment {
                s.push_str(" #");
                s.push_str(&c);
            }
            s.push('\r');
            s.into_bytes()
        })
}

fn window() -> impl Strategy<Value = Window> {
    (
        1u32..,
        any::<u64>(),
        prop::collection::vec(any::<u64>(), 0..=61),
    )
        .prop_map(|(period, first, counts)| Window {
            period,
            first,
            counts,
        })
}

fn counter() -> impl Strategy<Value = Counter> {
    (
        prop::collection::vec(any::<u8>(), 0..=255),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(item(), 0..=16),
        prop::collection::vec(window(), 0..=4),
        prop::option::of((any::<u64>(), ".{0,40}")),
    )
        .prop_map(
            |(client, total, refused, last_refused, notified, mut windows, block)| {
                // A counter holds one window per period.
                windows.sort_by_key(|w| w.period);
                windows.dedup_by_key(|w| w.period);
                Counter {
                    client,
                    total,
                    refused,
                    last_refused,
                    notified,
                    block: block.map(|(until, reason)| Block { until, reason }),
                    windows,
                }
            },
        )
}

/// A scratch file per test thread, for the cdb reader.
fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "overlimit-prop-{}-{tag}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

fn cdb_of(tag: &str, bytes: &[u8]) -> (cdb::Reader, PathBuf) {
    let path = scratch(tag);
    std::fs::write(&path, bytes).unwrap();
    (cdb::Reader::new(File::open(&path).unwrap()), path)
}

// ---- The control file ------------------------------------------------------------

proptest! {
    #[test]
    fn clean_keeps_no_white_space_or_comment_and_never_panics(
        raw in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut out = Vec::new();
        let kept = clean(&raw, &mut out);
        prop_assert_eq!(kept, !out.is_empty());
        prop_assert!(!out.iter().any(|b| b.is_ascii_whitespace() || *b == b'#'));
    }

    #[test]
    fn any_line_parses_or_is_refused_without_panicking(
        raw in prop::collection::vec(line_byte(), 0..120),
    ) {
        let mut buf = Vec::new();
        if clean(&raw, &mut buf) {
            let _ = Entry::parse(&buf);
        }
        let _ = Limits::parse(&raw);
    }

    #[test]
    fn limits_that_parse_print_in_a_form_that_parses_the_same(
        raw in prop::collection::vec(line_byte(), 0..60),
    ) {
        if let Ok(l) = Limits::parse(&raw) {
            let shown = l.to_string();
            prop_assert_eq!(Limits::parse(shown.as_bytes()), Ok(l));
        }
    }

    #[test]
    fn canonical_limits_round_trip(l in limits()) {
        let shown = l.to_string();
        prop_assert_eq!(Limits::parse(shown.as_bytes()), Ok(l));
    }

    #[test]
    fn periods_print_in_a_unit_that_parses_back(p in 1u32..=366 * 86_400) {
        let item = Item { max: 1, period: Some(p) };
        let l = Limits::parse(item.to_string().as_bytes()).unwrap();
        prop_assert_eq!(l.items[0].period, Some(p), "{}", format_period(p));
    }

    /// A typed line that parses is equal to its canonical line (the key as
    /// the cdb stores it, the limits as printed), which is never masked.
    #[test]
    fn typed_lines_equal_their_canonical_form(raw in typed_line()) {
        let mut buf = Vec::new();
        prop_assert!(clean(&raw, &mut buf));
        if let Ok(e) = Entry::parse(&buf) {
            let canonical = [&e.key.to_bytes()[..], b":", e.limits.to_string().as_bytes()].concat();
            let again = Entry::parse(&canonical);
            prop_assert_eq!(
                again.as_ref().map(|a| (&a.key, &a.limits, a.masked)),
                Ok((&e.key, &e.limits, false)),
                "{}", String::from_utf8_lossy(&canonical)
            );
        }
    }

    #[test]
    fn a_range_contains_every_address_it_was_made_from(a in ip(), len in 0u8..=128) {
        let bits = if a.is_ipv4() { 32 } else { 128 };
        let net = Net::new(a, len.min(bits));
        prop_assert!(net.contains(a));
        let (parsed, masked) = Net::parse(net.to_string().as_bytes()).unwrap();
        prop_assert!(!masked);
        // A mapped range comes back as the IPv4 range it covers.
        prop_assert!(parsed == net || parsed.addr.is_ipv4() && !net.addr.is_ipv4());
    }

    #[test]
    fn keys_classify_without_panicking(raw in prop::collection::vec(line_byte(), 0..60)) {
        if let Ok((Key::Range(n), _)) = Key::parse(&raw) {
            let bits = if n.addr.is_ipv4() { 32 } else { 128 };
            prop_assert!(n.len <= bits);
        }
    }
}

// ---- Counter files ---------------------------------------------------------------

proptest! {
    #[test]
    fn any_bytes_read_as_a_counter_or_not_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        size in any::<u64>(),
    ) {
        let _ = Counter::parse(&bytes, size);
    }

    /// Mutations of a real counter file: the checksum refuses the damage or
    /// the reader copes; never a panic.
    #[test]
    fn damaged_counter_files_never_panic(
        c in counter(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut text = c.to_text();
        for (at, b) in flips {
            let i = at.index(text.len());
            text[i] = b;
        }
        let _ = Counter::parse(&text, text.len() as u64);
        let n = cut.index(text.len());
        let _ = Counter::parse(&text[..n], n as u64);
    }

    #[test]
    fn counters_round_trip_through_their_text(c in counter()) {
        let text = c.to_text();
        prop_assert_eq!(Counter::parse(&text, text.len() as u64), Some(c));
    }

    /// What a kill between the write and the truncate leaves: the new text,
    /// then the rest of a longer old one.
    #[test]
    fn the_rest_of_an_older_longer_file_is_ignored(
        new in counter(),
        old in counter(),
    ) {
        let (new_text, old_text) = (new.to_text(), old.to_text());
        let mut file = new_text.clone();
        if old_text.len() > new_text.len() {
            file.extend_from_slice(&old_text[new_text.len()..]);
        }
        prop_assert_eq!(Counter::parse(&file, file.len() as u64), Some(new));
    }

    #[test]
    fn seed_script_x_files_count_their_size(n in 0usize..5000, size_extra in 0u64..1_000_000) {
        let xs = vec![b'X'; n];
        let size = n as u64 + size_extra;
        prop_assert_eq!(Counter::parse(&xs, size).map(|c| c.total), Some(size));
    }

    #[test]
    fn counter_file_names_stay_inside_the_directory(
        name in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        for f in [client_file(&name), domain_file(&name)] {
            prop_assert!(!f.is_empty() && f.len() <= 240, "{}", f);
            prop_assert!(!f.contains('/') && f != "." && f != "..", "{}", f);
            prop_assert!(!f.starts_with('.'), "{}", f);
        }
        prop_assert!(!client_file(&name).starts_with('@'));
        prop_assert!(domain_file(&name).starts_with('@'));
    }

    #[test]
    fn different_clients_get_different_counter_files(
        a in prop::collection::vec(any::<u8>(), 1..300),
        b in prop::collection::vec(any::<u8>(), 1..300),
    ) {
        prop_assume!(a != b);
        prop_assert_ne!(client_file(&a), client_file(&b));
        prop_assert_ne!(domain_file(&a), domain_file(&b));
    }
}

// ---- The cdb -------------------------------------------------------------------

proptest! {
    #[test]
    fn any_bytes_as_a_cdb_never_panic_or_loop(
        bytes in prop::collection::vec(any::<u8>(), 0..6000),
        keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..6),
    ) {
        let (r, path) = cdb_of("bytes", &bytes);
        for k in &keys {
            let _ = r.get(k);
        }
        let _ = r.get(b"\nsource");
        std::fs::remove_file(path).unwrap();
    }

    /// A real cdb with bytes changed: the header and tables point anywhere.
    #[test]
    fn damaged_cdbs_never_panic_or_loop(
        n in 0usize..300,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..24),
    ) {
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
            .map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes()))
            .collect();
        let path = scratch("damaged");
        let mut f = File::options().read(true).write(true).create(true).truncate(true)
            .open(&path).unwrap();
        cdb::write(&mut f, &records).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let (r, path) = cdb_of("damaged", &bytes);
        for i in 0..n.min(20) {
            let _ = r.get(format!("k{i}").as_bytes());
        }
        let _ = r.get(b"absent");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn what_is_written_to_a_cdb_reads_back(
        records in prop::collection::btree_map(
            prop::collection::vec(any::<u8>(), 0..20),
            prop::collection::vec(any::<u8>(), 0..40),
            0..200,
        ),
        absent in prop::collection::vec(any::<u8>(), 0..20),
    ) {
        let list: Vec<(Vec<u8>, Vec<u8>)> = records.clone().into_iter().collect();
        let path = scratch("roundtrip");
        let mut f = File::options().read(true).write(true).create(true).truncate(true)
            .open(&path).unwrap();
        cdb::write(&mut f, &list).unwrap();
        let r = cdb::Reader::new(File::open(&path).unwrap());
        for (k, v) in &records {
            prop_assert_eq!(r.get(k).unwrap(), Some(v.clone()));
        }
        if !records.contains_key(&absent) {
            prop_assert_eq!(r.get(&absent).unwrap(), None);
        }
        std::fs::remove_file(path).unwrap();
    }
}

// ---- Text and cdb agree ---------------------------------------------------------

/// Keys that overlap on purpose: a user, its domain's two kinds of line,
/// addresses in several notations and ranges nested in each other.
const KEYS: &[&str] = &[
    "",
    "a@x.example",
    "A@X.Example",
    "*@x.example",
    "@x.example",
    "*@y.example",
    "@Y.example",
    "10.1.2.3",
    "::ffff:10.1.2.3",
    "10.1.2.0/24",
    "10.1.0.0/16",
    "10.1.2.7/16",
    "10.0.0.0/8",
    "2001:db8::1",
    "2001:DB8:0::1",
    "2001:db8::/32",
    "2001:db8:0:1::/64",
    // Issue 10: login spellings, range aggregates, lines that never match.
    "web/1",
    "web%1",
    "WEB@1",
    "a%x.example",
    "@10.1.0.0/16",
    "@10.1.2.7/24",
    "@2001:db8::/64",
    "@2001:db8::/32",
    "300.1.2.3",
    "*x.example",
    "00003@X.example",
    "we2/1",
];

/// Clients to look up: some named by the keys above, some only covered.
const CLIENTS: &[&str] = &[
    "a@x.example",
    "c@x.example",
    "d@y.example",
    "e@z.example",
    "10.1.2.3",
    "10.1.9.9",
    "10.9.9.9",
    "192.0.2.1",
    "2001:db8::1",
    "2001:db8:0:1::5",
    "2001:db9::1",
    "web@1",
    "web/1",
    "Web%1",
    "a/x.example",
    "2001:db8::9",
];

proptest! {
    // Each case compiles a cdb (with its fsync): a quarter of the cases the
    // others run, 64 by default, PROPTEST_CASES / 4 in the long run.
    #![proptest_config({
        let all = ProptestConfig::default();
        ProptestConfig { cases: (all.cases / 4).max(16), ..all }
    })]

    /// For any valid control file, the plug-in decides the same from the text
    /// and from the cdb `overlimit compile` makes of it: same limits, same
    /// line, same domain counter, for every client.
    #[test]
    fn the_cdb_resolves_every_client_as_the_text_does(
        lines in prop::collection::vec((prop::sample::select(KEYS), limits()), 0..24),
    ) {
        use overlimit::client::Client;
        use overlimit::lookup::resolve;
        let dir = scratch("agree");
        std::fs::create_dir_all(&dir).unwrap();
        let control = dir.join("relaylimits");
        let _ = std::fs::remove_file(dir.join("relaylimits.cdb"));
        let text: String = lines.iter().map(|(k, l)| format!("{k}:{l}\n")).collect();
        std::fs::write(&control, &text).unwrap();
        let mut notes = Vec::new();
        let from_text: Vec<_> = CLIENTS
            .iter()
            .map(|c| resolve(&control, &Client::from_name(c.as_bytes()).unwrap(), &mut notes).unwrap())
            .collect();
        prop_assert!(notes.is_empty(), "{:?}", notes);
        prop_assert_eq!(overlimit::admin::compile::run(&control), 0);
        prop_assert!(dir.join("relaylimits.cdb").exists());
        for (c, want) in CLIENTS.iter().zip(&from_text) {
            let got = resolve(&control, &Client::from_name(c.as_bytes()).unwrap(), &mut notes).unwrap();
            prop_assert_eq!(&got, want, "{} with\n{}", c, text);
        }
        prop_assert!(notes.is_empty(), "the cdb was current: {:?}", notes);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

// ---- One classifier: the plug-in skips exactly what check reports --------------

/// A line of a control file that may be anything: a line with an
/// overlapping key, or bytes.
fn any_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (prop::sample::select(KEYS), limits())
            .prop_map(|(k, l)| format!("{k}:{l}").into_bytes()),
        1 => (prop::sample::select(KEYS), prop::collection::vec(line_byte(), 0..12))
            .prop_map(|(k, tail)| [format!("{k}:").into_bytes(), tail].concat()),
        1 => prop::collection::vec(line_byte(), 0..30),
    ]
}

proptest! {
    #![proptest_config({
        let all = ProptestConfig::default();
        ProptestConfig { cases: (all.cases / 4).max(16), ..all }
    })]

    /// Pins issue 10's "two parsers for one line" (`web/1:1` enforced by the
    /// plug-in, a bad range to `check`, refused by `compile`): for any file,
    /// the lines `check` reports are the ones the plug-in skips, and the
    /// others mean the same to both. The file with check's bad lines blanked
    /// compiles, and its cdb answers every client as the plug-in's scan of
    /// the original text does.
    #[test]
    fn the_plugin_reads_any_file_as_check_and_compile_do(
        lines in prop::collection::vec(any_line(), 0..20),
    ) {
        use overlimit::client::Client;
        use overlimit::lookup::resolve;
        let dir = scratch("classify");
        std::fs::create_dir_all(&dir).unwrap();
        let text_file = dir.join("text");
        let good_file = dir.join("good");
        let _ = std::fs::remove_file(dir.join("good.cdb"));
        let text: Vec<u8> = lines.iter().flat_map(|l| [&l[..], b"\n"].concat()).collect();
        std::fs::write(&text_file, &text).unwrap();
        let parsed = overlimit::admin::parse_file(&text_file).unwrap().unwrap();
        let bad: std::collections::BTreeSet<usize> = parsed.errors.iter().map(|(n, _)| *n).collect();
        let parts: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        let good: Vec<u8> = parts[..parts.len() - 1]
            .iter()
            .enumerate()
            .flat_map(|(i, l)| if bad.contains(&(i + 1)) { b"\n".to_vec() } else { [l, &b"\n"[..]].concat() })
            .collect();
        std::fs::write(&good_file, &good).unwrap();
        prop_assert_eq!(overlimit::admin::compile::run(&good_file), 0);
        let mut notes = Vec::new();
        for c in CLIENTS {
            let client = Client::from_name(c.as_bytes()).unwrap();
            let scanned = resolve(&text_file, &client, &mut notes).unwrap();
            let compiled = resolve(&good_file, &client, &mut Vec::new()).unwrap();
            prop_assert_eq!(&scanned, &compiled, "{} with\n{}", c, String::from_utf8_lossy(&text));
        }
        // One pass for many counters (`status`, the sweep), with more keys
        // of one length than are compared in place, answers as one each.
        use overlimit::counted::Counted;
        let mut many: Vec<Client> = CLIENTS.iter().map(|c| Client::from_name(c.as_bytes()).unwrap()).collect();
        many.extend((0..12).map(|i| Client::from_name(format!("{i:0>5}@x.example").as_bytes()).unwrap()));
        many.extend((0..6).map(|i| Client::from_name(format!("we{i}%1").as_bytes()).unwrap()));
        let wanted: Vec<Counted> = many.iter().cloned().map(Counted::Client).collect();
        let source = overlimit::lookup::open(&text_file, &wanted, &mut Vec::new()).unwrap();
        for client in &many {
            let alone = resolve(&text_file, client, &mut Vec::new()).unwrap();
            prop_assert_eq!(overlimit::rules::resolve_in(&source, client).unwrap(), alone, "{:?}", client);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The scan's allocation-free key is the classifier's canonical key.
    #[test]
    fn the_scan_key_is_the_canonical_key(key in prop::collection::vec(line_byte(), 0..30)) {
        use overlimit::control::{classify, write_key};
        if let Ok(kind) = classify(&key) {
            let mut out = b"stale".to_vec();
            for atchars in [&b"@%/"[..], b"@"] {
                write_key(kind, atchars, &mut out);
                prop_assert_eq!(&out, &Key::from_kind(kind, atchars).to_bytes());
            }
        }
    }
}

// ---- The scan's shortcuts keep what the classifier's keys say ------------------

/// Keys that the scan's shortcuts must read as the classifier does: dotted
/// text that is and is not an address, addresses written long, short, in
/// upper case and IPv4-mapped, ranges around the clients' addresses, and a
/// login spelled as a range aggregate.
const SPELLINGS: &[&str] = &[
    "010.1.2.3",
    "10.01.2.3",
    "10.1.2.3.4",
    "10.1.2",
    "1234",
    "10.1.2.3/32",
    "0.0.0.0/0",
    "::/0",
    "@::/0",
    "::ffff:10.1.2.0/120",
    "2001:0db8:0:0::1",
    "2001:DB8::0:1",
    "::FFFF:10.1.2.3",
    "0:0:0:0:0:ffff:a01:203",
    "dead:beef",
    "DEAD",
    "192.0.2.1",
    "@10.1.0.0/16",
    "A/B@x.example",
];

/// Clients whose keys have something a shortcut looks at: a `/`, an `@`
/// in front, hex digits only.
const ODD_CLIENTS: &[&str] = &["@10.1.0.0/16", "a/b@x.example", "dead", "1234", "10.1.2"];

/// Aggregates asked about by label, as `status` and the sweep ask.
const AGGREGATES: &[&str] = &["@x.example", "@y.example", "@10.1.0.0/16", "@2001:db8::/64"];

/// A line as the scan may meet it: any line, a spelling above, either with
/// white space and a comment around it.
fn scanned_line() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        3 => any_line(),
        2 => (prop::sample::select(SPELLINGS), limits())
            .prop_map(|(k, l)| format!("{k}:{l}").into_bytes()),
    ];
    (line, any::<bool>(), any::<bool>()).prop_map(|(line, spaced, comment)| {
        let mut out = Vec::new();
        if spaced {
            out.push(b' ');
            for b in line {
                out.push(b);
                if b == b':' {
                    out.push(b'\t');
                }
            }
        } else {
            out = line;
        }
        if comment {
            out.extend_from_slice(b" # note: 10.1.2.3");
        }
        out
    })
}

/// Wanted counters: clients of both kinds and aggregates by label.
fn wanted() -> impl Strategy<Value = Vec<overlimit::counted::Counted>> {
    use overlimit::client::Client;
    use overlimit::counted::Counted;
    let names: Vec<&str> = CLIENTS.iter().chain(ODD_CLIENTS).copied().collect();
    (
        prop::sample::subsequence(names, 0..5),
        prop::sample::subsequence(AGGREGATES.to_vec(), 0..2),
    )
        .prop_map(|(clients, aggregates)| {
            let clients = clients
                .into_iter()
                .map(|c| Counted::Client(Client::from_name(c.as_bytes()).unwrap()));
            let aggregates = aggregates
                .into_iter()
                .map(|a| Counted::from_label(a.as_bytes()).unwrap());
            clients.chain(aggregates).collect()
        })
}

/// What one pass over `text` must keep for `wanted`, found the long way:
/// each line classified and its canonical key built, kept when the key is
/// a wanted counter's or a range holds a wanted address. Returns the kept
/// keys with their line and limits, the prefix lengths kept (index
/// `2 * v6 + aggregate`) and the numbers of the bad lines, in order.
#[allow(clippy::type_complexity)]
fn kept_the_long_way(
    text: &[u8],
    wanted: &[overlimit::counted::Counted],
) -> (
    std::collections::HashMap<Vec<u8>, (usize, Limits)>,
    [std::collections::BTreeSet<u8>; 4],
    Vec<usize>,
) {
    use overlimit::client::{Client, DEFAULT_ATCHARS};
    use overlimit::control::{classify, split};
    use overlimit::counted::Counted;
    let mut keys = std::collections::HashSet::from([Vec::new()]);
    let mut addresses = Vec::new();
    for counted in wanted {
        keys.insert(counted.label());
        match counted {
            Counted::Client(c @ Client::User(_)) => {
                if let Some(d) = c.domain() {
                    keys.insert([b"*@", d].concat());
                    keys.insert([b"@", d].concat());
                }
            }
            Counted::Client(Client::Ip(ip)) => addresses.push(*ip),
            Counted::Domain(_) | Counted::Range(_) => {}
        }
    }
    let mut kept = std::collections::HashMap::new();
    let mut lengths: [std::collections::BTreeSet<u8>; 4] = Default::default();
    let mut bad = Vec::new();
    let mut buf = Vec::new();
    for (number, raw) in (1..).zip(text.split(|&b| b == b'\n')) {
        if !clean(raw, &mut buf) {
            continue;
        }
        let Ok((left, right)) = split(&buf) else {
            bad.push(number);
            continue;
        };
        let Ok(kind) = classify(left) else {
            bad.push(number);
            continue;
        };
        let key = Key::from_kind(kind, DEFAULT_ATCHARS);
        let range = match key {
            Key::Range(net) => Some((net, 0)),
            Key::RangeAggregate(net) => Some((net, 1)),
            _ => None,
        };
        let holds = range.is_some_and(|(net, _)| addresses.iter().any(|&a| net.contains(a)));
        if !keys.contains(&key.to_bytes()) && !holds {
            continue;
        }
        match Limits::parse(right) {
            Ok(limits) => {
                if let Some((net, aggregate)) = range {
                    lengths[2 * usize::from(net.addr.is_ipv6()) + aggregate].insert(net.len);
                }
                kept.insert(key.to_bytes(), (number, limits));
            }
            Err(_) => bad.push(number),
        }
    }
    (kept, lengths, bad)
}

proptest! {
    /// The scan skips most lines without building their keys (by length,
    /// by the addresses wanted, by a `/` in a wanted key) and hands lines
    /// over uncopied: for any file and any counters asked about, it keeps
    /// exactly the lines the classifier's canonical keys say concern them,
    /// and notes exactly the bad lines it noted when it built every key.
    #[test]
    fn the_scan_keeps_what_the_classifier_keeps(
        lines in prop::collection::vec(scanned_line(), 0..24),
        wanted in wanted(),
    ) {
        use overlimit::lookup::{open, MAX_NOTES};
        use overlimit::rules::Lines;
        let dir = scratch("shortcuts");
        std::fs::create_dir_all(&dir).unwrap();
        let control = dir.join("relaylimits");
        let text: Vec<u8> = lines.iter().flat_map(|l| [&l[..], b"\n"].concat()).collect();
        std::fs::write(&control, &text).unwrap();
        let (want, lengths, bad) = kept_the_long_way(&text, &wanted);
        let mut notes = Vec::new();
        let source = open(&control, &wanted, &mut notes).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let shown = String::from_utf8_lossy(&text);
        // Every key a line of the file or a wanted counter has, asked.
        let mut asked: Vec<Vec<u8>> = wanted.iter().map(|c| c.label()).collect();
        let mut buf = Vec::new();
        for raw in text.split(|&b| b == b'\n') {
            if clean(raw, &mut buf) {
                if let Ok((key, _)) = overlimit::control::split(&buf) {
                    asked.extend(Key::parse(key).ok().map(|(k, _)| k.to_bytes()));
                }
            }
        }
        asked.extend(want.keys().cloned());
        for key in &asked {
            prop_assert_eq!(
                source.rule(key).unwrap(),
                want.get(key).cloned(),
                "key {:?} for {:?} in\n{}", String::from_utf8_lossy(key), wanted, shown
            );
        }
        for (i, lens) in lengths.iter().enumerate() {
            let got: std::collections::BTreeSet<u8> =
                source.lengths(i >= 2, i % 2 == 1).unwrap().into_iter().collect();
            prop_assert_eq!(&got, lens, "lengths {} in\n{}", i, shown);
        }
        let noted: Vec<usize> = notes
            .iter()
            .filter_map(|n| n.strip_prefix("line "))
            .map(|n| n.split([':', ' ']).next().unwrap().parse().unwrap())
            .collect();
        prop_assert_eq!(&noted[..], &bad[..bad.len().min(MAX_NOTES)], "notes {:?} in\n{}", notes, shown);
        prop_assert_eq!(notes.len() > noted.len(), bad.len() > MAX_NOTES, "{:?}", notes);
    }

    /// Digits and dots are their own canonical key, an address or not: the
    /// standard parser takes dotted decimal only as it prints it (no
    /// leading zeros, four parts), which the scan relies on to pass such
    /// lines over without parsing them.
    #[test]
    fn dotted_keys_are_their_own_canonical_key(
        key in prop_oneof![
            "[0-9.]{1,16}",
            (0u16..300, 0u16..300, 0u16..300, 0u16..300, 0usize..3).prop_map(|(a, b, c, d, zeros)| {
                format!("{}{a}.{b}.{c}.{d}", "0".repeat(zeros))
            }),
        ],
    ) {
        let (parsed, _) = Key::parse(key.as_bytes()).unwrap();
        prop_assert_eq!(parsed.to_bytes(), key.as_bytes());
    }

    /// A line cleaned in place is the line `clean` copies.
    #[test]
    fn cleaned_in_place_is_cleaned_by_copy(raw in prop::collection::vec(line_byte(), 0..60)) {
        let (mut copied, mut spare) = (Vec::new(), Vec::new());
        let kept = clean(&raw, &mut copied);
        let in_place = overlimit::control::cleaned(&raw, &mut spare);
        prop_assert_eq!(in_place, &copied[..]);
        prop_assert_eq!(kept, !in_place.is_empty());
    }
}

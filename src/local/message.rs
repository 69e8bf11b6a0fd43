//! The little the wrapper reads of a message: the header's recipient fields,
//! its subject (for the log), and its line ends (for a stamp that matches).
//!
//! Counting errs high where mail software differs: every recipient field any
//! common injector reads is counted (qmail-inject uses `Resent-` fields when
//! present, and `Apparently-To`), lines that are not fields do not end the
//! header (only an empty line does), words without commas count one each
//! (Postfix sends `To: a@x b@y` to both), and an address list whose quote,
//! comment or bracket is left open counts every piece between commas and
//! white space.

/// The fields whose addresses are recipients with `-t`.
const RECIPIENT_FIELDS: [&[u8]; 7] = [
    b"to",
    b"cc",
    b"bcc",
    b"resent-to",
    b"resent-cc",
    b"resent-bcc",
    b"apparently-to",
];

/// The header's fields as (name, value), continuation lines unfolded into the
/// value. CRLF and LF line ends both work; the header ends at the first empty
/// line.
pub fn fields(message: &[u8]) -> Vec<(&[u8], Vec<u8>)> {
    let mut out: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = out.last_mut() {
                // Unfolding drops the line end and keeps the white space.
                value.extend_from_slice(line);
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = line[..colon].trim_ascii();
            if !name.is_empty() && !name.iter().any(u8::is_ascii_whitespace) {
                out.push((name, line[colon + 1..].to_vec()));
                continue;
            }
        }
        // Neither a field nor a continuation (a mbox `From ` line, junk):
        // skipped, and what follows is still read as header.
        out.push((b"", Vec::new()));
    }
    out
}

/// Recipients named in the header's To, Cc, Bcc (and Resent-, Apparently-To).
pub fn header_recipients(message: &[u8]) -> u64 {
    fields(message)
        .iter()
        .filter(|(name, _)| {
            RECIPIENT_FIELDS
                .iter()
                .any(|f| name.eq_ignore_ascii_case(f))
        })
        .map(|(_, value)| count_addresses(value))
        .sum()
}

/// The first Subject, unfolded and trimmed, for the log.
pub fn subject(message: &[u8]) -> Option<Vec<u8>> {
    fields(message)
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"subject"))
        .map(|(_, value)| value.trim_ascii().to_vec())
}

/// The message's line end, from its first line: PHP 8 writes CRLF, older
/// PHP and most tools LF.
pub fn line_end(message: &[u8]) -> &'static [u8] {
    match message.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && message[i - 1] == b'\r' => b"\r\n",
        _ => b"\n",
    }
}

/// Where a header field may be added at the top: after a leading mbox
/// `From ` line, which injectors strip, else at offset 0.
pub fn top(message: &[u8]) -> usize {
    if message.starts_with(b"From ") {
        if let Some(i) = message.iter().position(|&b| b == b'\n') {
            return i + 1;
        }
    }
    0
}

/// The addresses in one address list: `a@x, "Doe, J" <j@x>, Team: b@x, c@x;`
/// counts 4. Display names, comments and group names are not addresses; an
/// empty group (`undisclosed-recipients:;`) counts none. Words without
/// commas count one each (`a@x b@y` is two: Postfix sends to both), except a
/// display name's words before `<`.
pub fn count_addresses(list: &[u8]) -> u64 {
    let mut total = 0;
    // In the current element: `<...>` addresses, and words not yet known to
    // be a display name (a later `<` makes them one).
    let (mut angles, mut words) = (0u64, 0u64);
    let mut in_word = false;
    let (mut quote, mut comment, mut angle, mut literal) = (false, 0u32, false, false);
    let mut bytes = list.iter();
    while let Some(&b) = bytes.next() {
        if quote || comment > 0 || literal {
            match b {
                b'\\' => {
                    bytes.next();
                }
                b'"' if quote => quote = false,
                b'(' if comment > 0 => comment += 1,
                b')' if comment > 0 => comment -= 1,
                b']' if literal => literal = false,
                _ => {}
            }
            continue;
        }
        if angle {
            match b {
                b'>' => angle = false,
                // A route (`<@a,@b:u@x>`) is one address; Postfix reads
                // `<a@x, b@y>` as one too. Counting the pieces errs high.
                b',' => angles += 1,
                b'"' => quote = true,
                _ => {}
            }
            continue;
        }
        let starts_word = match b {
            b'"' => {
                quote = true;
                true
            }
            b'[' => {
                literal = true;
                true
            }
            b'(' => {
                comment = 1;
                in_word = false;
                false
            }
            b'<' => {
                (angle, in_word) = (true, false);
                angles += 1;
                words = 0;
                false
            }
            b',' | b';' => {
                total += angles + words;
                (angles, words, in_word) = (0, 0, false);
                false
            }
            // Outside brackets, a colon ends a group's name.
            b':' => {
                (angles, words, in_word) = (0, 0, false);
                false
            }
            b'>' => false,
            b if b.is_ascii_whitespace() => {
                in_word = false;
                false
            }
            _ => true,
        };
        if starts_word && !in_word {
            words += 1;
            in_word = true;
        }
    }
    total += angles + words;
    if quote || comment > 0 || angle || literal {
        // Left open: another reader may split where this one did not.
        let pieces = list
            .split(|&b| b == b',' || b == b';' || b.is_ascii_whitespace())
            .filter(|p| !p.is_empty())
            .count() as u64;
        return total.max(pieces);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_count_mailboxes_not_commas() {
        assert_eq!(count_addresses(b" a@x.example"), 1);
        assert_eq!(count_addresses(b"a@x, b@y ,, c@z,"), 3);
        assert_eq!(count_addresses(b"\"Doe, John\" <j@x>, Jane <k@y>"), 2);
        assert_eq!(count_addresses(b"a@x (Smith, Bob), b@y"), 2);
        assert_eq!(count_addresses(b"Team: a@x, b@y;, c@z"), 3);
        assert_eq!(count_addresses(b"undisclosed-recipients:;"), 0);
        assert_eq!(count_addresses(b"u@[IPv6:2001:db8::1]"), 1);
        assert_eq!(count_addresses(b"\"esc\\\", aped\" <e@x>"), 1);
        assert_eq!(count_addresses(b""), 0);
    }

    #[test]
    fn words_without_commas_count_as_postfix_reads_them() {
        // Each case checked against Postfix 3.7's sendmail -t.
        assert_eq!(count_addresses(b"a@x b@y"), 2);
        assert_eq!(count_addresses(b"nobody root"), 2);
        assert_eq!(count_addresses(b"a@x (c) b@y"), 2);
        assert_eq!(count_addresses(b"\"x y\" a@x"), 2);
        assert_eq!(count_addresses(b"Team: nobody root;"), 2);
        assert_eq!(count_addresses(b"a@x;b@y"), 2);
        assert_eq!(count_addresses(b"<a@x>b@y"), 2);
        assert_eq!(count_addresses(b"<a@x> <b@y>"), 2);
        assert_eq!(count_addresses(b"nobody root <a@x>"), 1);
        assert_eq!(count_addresses(b"a@x b@y <c@z>"), 1);
        assert_eq!(count_addresses(b"<a@x> root <b@y>"), 2);
        assert_eq!(count_addresses(b"<a@x> \"r\" <b@y> x"), 3);
        assert_eq!(count_addresses(b"x\"y z\"@w"), 1);
    }

    #[test]
    fn an_open_quote_counts_every_piece() {
        assert_eq!(count_addresses(b"\"a@x, b@y, c@z"), 3);
        assert_eq!(count_addresses(b"a@x, (b@y, c@z"), 3);
        assert_eq!(count_addresses(b"<a@x b@y"), 2);
    }

    #[test]
    fn folded_fields_unfold_with_either_line_end() {
        for end in ["\n", "\r\n"] {
            let m = [
                "To: a@x,",
                "\tb@y",
                "CC: c@z",
                "Subject: Hi",
                " there",
                "bcc: d@w",
                "",
                "To: body@x",
                "",
            ]
            .join(end);
            assert_eq!(header_recipients(m.as_bytes()), 4, "{end:?}");
            assert_eq!(subject(m.as_bytes()).unwrap(), b"Hi there");
            assert_eq!(line_end(m.as_bytes()), end.as_bytes());
        }
    }

    #[test]
    fn resent_and_junk_lines_do_not_hide_recipients() {
        let m = b"From someone Mon Jan  1\nResent-To: a@x\nnot a field\nApparently-To: b@y\nTo : c@z\n\n";
        assert_eq!(header_recipients(m), 3);
        assert_eq!(top(m), 24);
        assert_eq!(top(b"To: a@x\n"), 0);
    }

    #[test]
    fn a_message_without_an_empty_line_is_all_header() {
        assert_eq!(header_recipients(b"To: a@x\r\nCc: b@y"), 2);
        assert_eq!(subject(b"To: a@x\n"), None);
    }
}

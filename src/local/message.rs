//! The little the wrapper reads and changes of a message's header: the
//! recipient fields for `-t`, the `Bcc:` fields it removes, the subject for
//! the log, the line end for a field it adds.
//!
//! The header is read as qmail-inject and Postfix's cleanup read it: it ends
//! at the first empty line or at the first line that is neither a field nor
//! a continuation; a leading mbox `From ` line is skipped. The recipients
//! found here are handed to the MTA as arguments, never left for it to find,
//! so where this reading differs from the MTA's nothing goes out uncounted.

use super::address;

/// One header field: its name, where its lines lie, its unfolded value.
#[derive(Debug)]
pub struct Field<'a> {
    pub name: &'a [u8],
    /// Byte range of the field's lines, line ends included.
    pub span: std::ops::Range<usize>,
    pub value: Vec<u8>,
}

/// The header's fields, in order.
pub fn fields(message: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field> = Vec::new();
    let mut at = top(message);
    while at < message.len() {
        let end = message[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| at + i + 1);
        let line = &message[at..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            break;
        }
        if text[0] == b' ' || text[0] == b'\t' {
            let Some(field) = out.last_mut() else { break };
            // Unfolding drops the line end and keeps the white space.
            field.value.extend_from_slice(text);
            field.span.end = end;
        } else {
            let Some(colon) = text.iter().position(|&b| b == b':') else {
                break;
            };
            let name = text[..colon].trim_ascii_end();
            if name.is_empty() || !name.iter().all(|&b| b.is_ascii_graphic()) {
                break;
            }
            out.push(Field {
                name,
                span: at..end,
                value: text[colon + 1..].to_vec(),
            });
        }
        at = end;
    }
    out
}

fn named(f: &Field, names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| f.name.eq_ignore_ascii_case(n.as_bytes()))
}

/// The recipients `-t` sends to: those of To, Cc, Bcc and Apparently-To, or,
/// when the header has `Resent-` fields, of Resent-To, Resent-Cc and
/// Resent-Bcc only (as qmail-inject does). `Err` names the field it cannot read.
pub fn recipients(message: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let fields = fields(message);
    let resent = fields
        .iter()
        .any(|f| f.name.len() > 7 && f.name[..7].eq_ignore_ascii_case(b"resent-"));
    let wanted: &[&str] = if resent {
        &["resent-to", "resent-cc", "resent-bcc"]
    } else {
        &["to", "cc", "bcc", "apparently-to"]
    };
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| named(f, wanted)) {
        let found = address::list(&f.value)
            .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(f.name)))?;
        out.extend(found);
    }
    Ok(out)
}

/// The message without the fields named `names` (their continuation lines
/// too): `Bcc:` and `Resent-Bcc:` go, as qmail-inject removes them, and a
/// stamp the caller forged goes before the real one is added.
pub fn without(message: &[u8], names: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for f in fields(message).iter().filter(|f| named(f, names)) {
        out.extend_from_slice(&message[at..f.span.start]);
        at = f.span.end;
    }
    out.extend_from_slice(&message[at..]);
    out
}

/// The first Subject, unfolded and trimmed, for the log.
pub fn subject(message: &[u8]) -> Option<Vec<u8>> {
    fields(message)
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(b"subject"))
        .map(|f| f.value.trim_ascii().to_vec())
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

/// The message with `field` (a whole line, its line end included) on top.
pub fn with_field_on_top(message: &[u8], field: &[u8]) -> Vec<u8> {
    let top = top(message);
    [&message[..top], field, &message[top..]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpts(m: &str) -> Vec<String> {
        recipients(m.as_bytes())
            .unwrap()
            .into_iter()
            .map(|a| String::from_utf8(a).unwrap())
            .collect()
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
            assert_eq!(rcpts(&m), ["a@x", "b@y", "c@z", "d@w"], "{end:?}");
            assert_eq!(subject(m.as_bytes()).unwrap(), b"Hi there");
            assert_eq!(line_end(m.as_bytes()), end.as_bytes());
        }
    }

    #[test]
    fn resent_fields_take_over() {
        let m = "From someone Mon Jan  1\nTo: old@x\nResent-From: me@x\nResent-To: a@x\nResent-Bcc: b@y\n\n";
        assert_eq!(rcpts(m), ["a@x", "b@y"]);
        assert_eq!(top(m.as_bytes()), 24);
    }

    #[test]
    fn a_line_that_is_no_field_ends_the_header() {
        assert_eq!(rcpts("To: a@x\nnot a field\nCc: b@y\n\n"), ["a@x"]);
        assert_eq!(rcpts("To: a@x\r\nCc: b@y"), ["a@x", "b@y"]);
        assert_eq!(rcpts("To : c@z\n"), ["c@z"]);
        assert!(recipients(b"To: a@x b@y\n\n")
            .unwrap_err()
            .starts_with("To: "));
    }

    #[test]
    fn bcc_goes_with_its_continuation_lines() {
        let m =
            b"To: a@x\r\nBcc: b@y,\r\n c@z\r\nSubject: s\r\nresent-bcc: d@w\r\n\r\nBcc: body\r\n";
        assert_eq!(
            without(m, &["bcc", "resent-bcc"]),
            b"To: a@x\r\nSubject: s\r\n\r\nBcc: body\r\n"
        );
        assert_eq!(
            with_field_on_top(b"From x\nTo: a\n", b"X: 1\n"),
            b"From x\nX: 1\nTo: a\n"
        );
    }
}

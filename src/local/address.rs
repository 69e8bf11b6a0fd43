//! Addresses as the wrapper hands them on: an RFC 5322 address-list parser
//! that yields the addresses of a header field or a recipient argument, and
//! the check that each is one atomic address.
//!
//! The wrapper never lets the MTA read a recipient list itself: it passes each
//! address it counted as one argument. So this parser need not agree with
//! qmail-inject's or Postfix's in every corner; it must only never yield an
//! address that the MTA would read as more than one. `atomic` guarantees that:
//! a dot-atom local part and a dot-atom or literal domain, nothing an MTA
//! could split (no quotes, spaces, commas, brackets, parentheses, control
//! bytes) or read as an option (no leading `-`). Anything the parser cannot
//! read (a quote or comment left open, a backslash outside quotes, two
//! addresses without a comma) is an error, and the message is refused.

use crate::client::printable;

/// Longest address handed on (RFC 5321's path limit, less the brackets).
pub const MAX_ADDRESS: usize = 254;

/// Characters of an atom besides letters and digits (RFC 5322 `atext`).
const ATEXT: &[u8] = b"!#$%&'*+-/=?^_`{|}~";

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || ATEXT.contains(&b)
}

/// One address, ready to be one argument of the real sendmail: a dot-atom
/// local part, optionally `@` and a dot-atom domain or an address literal
/// (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
pub fn atomic(addr: &[u8]) -> bool {
    if addr.is_empty() || addr.len() > MAX_ADDRESS || addr[0] == b'-' {
        return false;
    }
    let (local, domain) = match addr.iter().position(|&b| b == b'@') {
        Some(at) => (&addr[..at], Some(&addr[at + 1..])),
        None => (addr, None),
    };
    let domain_ok = match domain {
        None => true,
        // An address literal (IPv4, `IPv6:...`, `tag:...`) needs letters,
        // digits, `.`, `:` and `-`; nothing that could end it or split it.
        Some(d) if d.starts_with(b"[") && d.ends_with(b"]") && d.len() > 2 => d[1..d.len() - 1]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b".:-".contains(&b)),
        Some(d) => dot_atom(d),
    };
    dot_atom(local) && domain_ok
}

fn dot_atom(s: &[u8]) -> bool {
    !s.is_empty()
        && s.split(|&b| b == b'.')
            .all(|a| !a.is_empty() && a.iter().all(|&b| is_atext(b)))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// A run of atom characters (bytes of 8 bits included: a display name
    /// may hold raw UTF-8; `atomic` refuses them in an address).
    Atom(Vec<u8>),
    /// A quoted string, as written (quotes and backslashes kept).
    Quoted(Vec<u8>),
    /// A domain literal, brackets included.
    Literal(Vec<u8>),
    /// One of `< > @ , ; : .`.
    Special(u8),
}

/// Splits an unfolded field value into tokens; comments and white space go.
fn tokens(text: &[u8]) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                let mut depth = 0u32;
                loop {
                    match text.get(i) {
                        None => return Err("a comment is left open".into()),
                        Some(b'\\') => i += 1,
                        Some(b'(') => depth += 1,
                        Some(b')') => depth -= 1,
                        Some(_) => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            b'"' | b'[' => {
                let close = if b == b'"' { b'"' } else { b']' };
                let start = i;
                i += 1;
                loop {
                    match text.get(i) {
                        None => return Err("a quoted string or literal is left open".into()),
                        Some(b'\\') => i += 1,
                        Some(&c) if c == close => break,
                        Some(&c) if c < 0x20 && c != b'\t' || c == 0x7f => {
                            return Err(format!("control byte \\x{c:02x}"))
                        }
                        Some(_) => {}
                    }
                    i += 1;
                }
                i += 1;
                let raw = text[start..i.min(text.len())].to_vec();
                out.push(if b == b'"' {
                    Token::Quoted(raw)
                } else {
                    Token::Literal(raw)
                });
            }
            b'<' | b'>' | b'@' | b',' | b';' | b':' | b'.' => {
                out.push(Token::Special(b));
                i += 1;
            }
            b'\\' => return Err("a backslash outside quotes".into()),
            _ if is_atext(b) || b >= 0x80 => {
                let start = i;
                while i < text.len() && (is_atext(text[i]) || text[i] >= 0x80) {
                    i += 1;
                }
                out.push(Token::Atom(text[start..i].to_vec()));
            }
            _ => return Err(format!("unexpected byte \\x{b:02x}")),
        }
    }
    Ok(out)
}

/// The addresses of an address list (a To: field's value, or one recipient
/// argument): `a@x, "Doe, J" <j@x>, Team: b@x, c@x;, <@r:d@y>` yields
/// a@x, j@x, b@x, c@x, d@y. Every address yielded is `atomic`.
pub fn list(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let toks = tokens(text)?;
    let mut p = Parser { t: &toks, i: 0 };
    let mut out = Vec::new();
    p.list(&mut out, false)?;
    for a in &out {
        if !atomic(a) {
            return Err(format!("\"{}\" is not one plain address", printable(a)));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    t: &'a [Token],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.t.get(self.i)
    }

    fn is(&self, b: u8) -> bool {
        self.peek() == Some(&Token::Special(b))
    }

    /// Elements separated by commas, up to the end (or `;` inside a group).
    fn list(&mut self, out: &mut Vec<Vec<u8>>, in_group: bool) -> Result<(), String> {
        loop {
            while self.is(b',') {
                self.i += 1;
            }
            match self.peek() {
                None => return Ok(()),
                Some(Token::Special(b';')) if in_group => return Ok(()),
                _ => {}
            }
            self.element(out, in_group)?;
            match self.peek() {
                None | Some(Token::Special(b',')) => {}
                Some(Token::Special(b';')) if in_group => {}
                Some(t) => return Err(format!("unexpected {} after an address", shown(t))),
            }
        }
    }

    /// A group (`name: a, b;`), a `phrase <addr>`, or a bare address.
    fn element(&mut self, out: &mut Vec<Vec<u8>>, in_group: bool) -> Result<(), String> {
        let start = self.i;
        // A phrase: words and dots, then `:` (a group) or `<` (a name-addr).
        while let Some(Token::Atom(_) | Token::Quoted(_) | Token::Special(b'.')) = self.peek() {
            self.i += 1;
        }
        match self.peek() {
            Some(Token::Special(b':')) if self.i > start && !in_group => {
                self.i += 1;
                self.list(out, true)?;
                if self.is(b';') {
                    self.i += 1;
                }
                Ok(())
            }
            Some(Token::Special(b'<')) => {
                self.i += 1;
                self.route()?;
                out.push(self.addr_spec()?);
                if !self.is(b'>') {
                    return Err("an angle bracket is left open".into());
                }
                self.i += 1;
                Ok(())
            }
            _ => {
                self.i = start;
                out.push(self.addr_spec()?);
                Ok(())
            }
        }
    }

    /// An obsolete source route (`@a,@b:`), skipped: the last hop is the address.
    fn route(&mut self) -> Result<(), String> {
        if !self.is(b'@') {
            return Ok(());
        }
        while self.is(b'@') || self.is(b',') {
            self.i += 1;
            if self.t.get(self.i - 1) == Some(&Token::Special(b'@')) {
                self.domain()?;
            }
        }
        if !self.is(b':') {
            return Err("a source route without its colon".into());
        }
        self.i += 1;
        Ok(())
    }

    /// `word(.word)*[@domain]`, rebuilt without comments or white space.
    fn addr_spec(&mut self) -> Result<Vec<u8>, String> {
        let mut a = self.word()?;
        while self.is(b'.') {
            self.i += 1;
            a.push(b'.');
            a.extend(self.word()?);
        }
        if self.is(b'@') {
            self.i += 1;
            a.push(b'@');
            a.extend(self.domain()?);
        }
        Ok(a)
    }

    fn word(&mut self) -> Result<Vec<u8>, String> {
        match self.peek() {
            Some(Token::Atom(w) | Token::Quoted(w)) => {
                let w = w.clone();
                self.i += 1;
                Ok(w)
            }
            Some(t) => Err(format!("expected an address, found {}", shown(t))),
            None => Err("an address ends early".into()),
        }
    }

    fn domain(&mut self) -> Result<Vec<u8>, String> {
        if let Some(Token::Literal(l)) = self.peek() {
            let l = l.clone();
            self.i += 1;
            return Ok(l);
        }
        let mut d = match self.peek() {
            Some(Token::Atom(w)) => w.clone(),
            _ => return Err("a domain is missing after @".into()),
        };
        self.i += 1;
        while self.is(b'.') {
            self.i += 1;
            d.push(b'.');
            match self.peek() {
                Some(Token::Atom(w)) => d.extend(w),
                _ => return Err("a domain ends in a dot".into()),
            }
            self.i += 1;
        }
        Ok(d)
    }
}

fn shown(t: &Token) -> String {
    match t {
        Token::Special(b) => format!("'{}'", *b as char),
        Token::Atom(w) | Token::Quoted(w) | Token::Literal(w) => {
            format!("\"{}\"", printable(w))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<String> {
        list(text.as_bytes())
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .into_iter()
            .map(|a| String::from_utf8(a).unwrap())
            .collect()
    }

    fn bad(text: &str) -> String {
        list(text.as_bytes()).expect_err(text)
    }

    #[test]
    fn lists_yield_their_addresses() {
        assert_eq!(ok(" a@x.example"), ["a@x.example"]);
        assert_eq!(ok("a@x, b@y ,, c@z,"), ["a@x", "b@y", "c@z"]);
        assert_eq!(ok("\"Doe, John\" <j@x>, Jane <k@y>"), ["j@x", "k@y"]);
        assert_eq!(ok("a@x (Smith, Bob), b@y"), ["a@x", "b@y"]);
        assert_eq!(ok("Team: a@x, b@y;, c@z"), ["a@x", "b@y", "c@z"]);
        assert_eq!(ok("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(ok("u@[IPv6:2001:db8::1]"), ["u@[IPv6:2001:db8::1]"]);
        assert_eq!(ok("\"esc\\\", aped\" <e@x>"), ["e@x"]);
        assert_eq!(ok("<@r1,@r2.example:d@y>"), ["d@y"]);
        assert_eq!(
            ok("=?utf-8?q?J=C3=B6rg?= <j@x>, J. Doe <d@x>"),
            ["j@x", "d@x"]
        );
        assert_eq!(ok("nobody"), ["nobody"]);
        assert_eq!(ok("a@x (c (nested) \\) still) "), ["a@x"]);
        assert_eq!(ok(""), Vec::<String>::new());
    }

    #[test]
    fn the_issues_header_tricks_are_refused_not_miscounted() {
        // qmail-inject reads `\` outside quotes as an escape: three victims.
        bad("x\\\", v1@victim.example, v2@victim.example, \"q\"(\")g:;");
        // Words without commas: qmail delivered five.
        bad("v1@victim v2@victim v3@victim [x] <a@x.example>");
        bad("a@x b@y");
        bad("\"a@x, b@y, c@z");
        bad("a@x, (b@y, c@z");
        bad("<a@x b@y");
        bad("\"quoted local\"@x");
        bad("-oQ/tmp@x");
        bad("a@x\0b@y");
        bad("<a@x>b@y");
        bad("a@x:b@y");
    }

    #[test]
    fn atomic_addresses_are_single_plain_arguments() {
        for good in [
            "a@x",
            "nobody",
            "a.b+c@d-e.example",
            "u@[192.0.2.1]",
            "o'neil@x",
        ] {
            assert!(atomic(good.as_bytes()), "{good}");
        }
        for worse in [
            "", "-f", "a b@x", "a,b@x", "<a@x>", "a@x@y", "a..b@x", ".a@x", "a@", "a@[x]]", "é@x",
            "a\n@x", "\"a\"@x",
        ] {
            assert!(!atomic(worse.as_bytes()), "{worse:?}");
        }
        assert!(!atomic(&[b'a'; MAX_ADDRESS + 1]));
    }

    #[test]
    fn a_domain_literal_holds_nothing_an_mta_could_read_as_a_list() {
        // Postfix reads `[...]` as one token; qmail-inject's reading of a
        // comma, quote, parenthesis or angle bracket inside one is not worth
        // finding out: an address literal needs none of them.
        for worse in [
            "a@[1,b@evil.example]",
            "a@[x(y]",
            "a@[x\"y]",
            "a@[x;y]",
            "a@[x<y>]",
            "a@[x@y]",
            "a@[]",
        ] {
            assert!(!atomic(worse.as_bytes()), "{worse:?}");
        }
        for good in [
            "u@[192.0.2.1]",
            "u@[IPv6:2001:db8::1]",
            "u@[IPv6:::ffff:192.0.2.1]",
        ] {
            assert!(atomic(good.as_bytes()), "{good}");
        }
    }
}

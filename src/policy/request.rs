//! One policy request as Postfix's smtpd sends it: `name=value` lines ended
//! by an empty line (SMTPD_POLICY_README). Only the attributes the decision
//! needs are kept; every other name is ignored, as the protocol asks, so a
//! newer Postfix that adds attributes keeps working.
//!
//! The reader is bounded in both directions a peer could abuse: a line may
//! not exceed `MAX_LINE` bytes and a request may not carry more than
//! `MAX_ATTRIBUTES` lines, so no connection can make the server hold more
//! than a few hundred kilobytes. Anything else that is not the protocol is
//! `Unreadable`: the caller closes the connection without an answer.

use crate::client::printable;
use std::fmt;
use std::io::{self, BufRead};

/// Longest attribute line accepted, newline excluded. Postfix's own SMTP
/// line limit is 2,048 bytes; certificate subjects can be longer.
pub const MAX_LINE: usize = 8 * 1024;

/// Most attribute lines in one request. Postfix 3.7 sends about 30.
pub const MAX_ATTRIBUTES: usize = 256;

/// The attributes the decision reads; absent ones are empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `CONNECT`, `EHLO`, `HELO`, `MAIL`, `RCPT`, `DATA`, `END-OF-MESSAGE`, ...
    pub protocol_state: Vec<u8>,
    /// The SMTP AUTH login, empty without AUTH.
    pub sasl_username: Vec<u8>,
    /// The SMTP client's IP address.
    pub client_address: Vec<u8>,
    /// The recipient of a RCPT request, for the log line.
    pub recipient: Vec<u8>,
}

impl Request {
    /// `RCPT` is the one state that counts a recipient.
    pub fn is_recipient(&self) -> bool {
        self.protocol_state == b"RCPT"
    }
}

/// Why a request was not read. Each ends the connection without a reply.
#[derive(Debug)]
pub enum Unreadable {
    /// A line longer than `MAX_LINE`.
    LineTooLong,
    /// More than `MAX_ATTRIBUTES` lines before the empty one.
    TooManyAttributes,
    /// A line without `=`, or with an empty name.
    NotAnAttribute(Vec<u8>),
    /// One of the attributes the decision reads, given twice: which one
    /// counts would be a guess.
    Repeated(&'static str),
    /// `request=` missing, or not `smtpd_access_policy`.
    NotAPolicyRequest,
    /// The peer closed the connection in the middle of a request.
    Truncated,
    Io(io::Error),
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreadable::LineTooLong => write!(f, "a line longer than {MAX_LINE} bytes"),
            Unreadable::TooManyAttributes => {
                write!(f, "more than {MAX_ATTRIBUTES} attributes in one request")
            }
            Unreadable::NotAnAttribute(line) => {
                let mut shown = line.clone();
                shown.truncate(80);
                write!(f, "not a name=value line: \"{}\"", printable(&shown))
            }
            Unreadable::Repeated(name) => write!(f, "attribute {name} given twice"),
            Unreadable::NotAPolicyRequest => {
                write!(f, "no request=smtpd_access_policy attribute")
            }
            Unreadable::Truncated => write!(f, "connection closed in the middle of a request"),
            Unreadable::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

/// Reads the next request; `Ok(None)` when the peer closed the connection
/// between requests, which is how every connection normally ends.
pub fn read(input: &mut impl BufRead, line: &mut Vec<u8>) -> Result<Option<Request>, Unreadable> {
    let mut request = Request::default();
    let mut is_policy = false;
    let mut seen = [false; 5];
    let mut count = 0;
    loop {
        if !read_line(input, line)? {
            return if count == 0 {
                Ok(None)
            } else {
                Err(Unreadable::Truncated)
            };
        }
        if line.is_empty() {
            return if is_policy {
                Ok(Some(request))
            } else {
                Err(Unreadable::NotAPolicyRequest)
            };
        }
        if count == MAX_ATTRIBUTES {
            return Err(Unreadable::TooManyAttributes);
        }
        count += 1;
        let eq = line.iter().position(|&b| b == b'=').filter(|&i| i > 0);
        let Some(eq) = eq else {
            return Err(Unreadable::NotAnAttribute(std::mem::take(line)));
        };
        let (name, value) = (&line[..eq], &line[eq + 1..]);
        let (slot, field): (usize, &mut Vec<u8>) = match name {
            b"protocol_state" => (0, &mut request.protocol_state),
            b"sasl_username" => (1, &mut request.sasl_username),
            b"client_address" => (2, &mut request.client_address),
            b"recipient" => (3, &mut request.recipient),
            b"request" => {
                if seen[4] {
                    return Err(Unreadable::Repeated("request"));
                }
                seen[4] = true;
                is_policy = value == b"smtpd_access_policy";
                continue;
            }
            _ => continue,
        };
        if seen[slot] {
            let names = [
                "protocol_state",
                "sasl_username",
                "client_address",
                "recipient",
            ];
            return Err(Unreadable::Repeated(names[slot]));
        }
        seen[slot] = true;
        field.extend_from_slice(value);
    }
}

/// Reads one line into `line` without its newline; `Ok(false)` at end of
/// input before any byte. Never holds more than `MAX_LINE` bytes.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> Result<bool, Unreadable> {
    line.clear();
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Unreadable::Io(e)),
        };
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(false)
            } else {
                Err(Unreadable::Truncated)
            };
        }
        let (part, used, ends) = match crate::bytes::find(b'\n', buf) {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        if line.len() + part.len() > MAX_LINE {
            return Err(Unreadable::LineTooLong);
        }
        line.extend_from_slice(part);
        input.consume(used);
        if ends {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Result<Option<Request>, Unreadable> {
        read(&mut &text[..], &mut Vec::new())
    }

    #[test]
    fn reads_the_attributes_it_needs_and_ignores_the_rest() {
        let r = parse(
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=a@b.c\n\
              client_address=192.0.2.1\nrecipient=x@y.z\nfuture_attribute=1=2\n\n",
        )
        .unwrap()
        .unwrap();
        assert!(r.is_recipient());
        assert_eq!(r.sasl_username, b"a@b.c");
        assert_eq!(r.client_address, b"192.0.2.1");
        assert_eq!(r.recipient, b"x@y.z");
    }

    #[test]
    fn end_of_input_between_requests_is_the_end() {
        assert!(parse(b"").unwrap().is_none());
        let two = b"request=smtpd_access_policy\n\nrequest=smtpd_access_policy\n\n";
        let mut input = &two[..];
        let mut line = Vec::new();
        assert!(read(&mut input, &mut line).unwrap().is_some());
        assert!(read(&mut input, &mut line).unwrap().is_some());
        assert!(read(&mut input, &mut line).unwrap().is_none());
    }

    #[test]
    fn malformed_requests_are_unreadable() {
        let bad: [&[u8]; 6] = [
            b"request=smtpd_access_policy\nno equals sign\n\n",
            b"request=smtpd_access_policy\n=value\n\n",
            b"protocol_state=RCPT\n\n",
            b"request=smtpd_access_policy\nprotocol_state=RCPT",
            b"request=smtpd_access_policy\nsasl_username=a\nsasl_username=b\n\n",
            b"request=other\n\n",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn limits_hold() {
        let mut long = b"request=smtpd_access_policy\nx=".to_vec();
        long.resize(long.len() + MAX_LINE, b'a');
        long.extend_from_slice(b"\n\n");
        assert!(matches!(parse(&long), Err(Unreadable::LineTooLong)));

        let request = |lines: usize| {
            let mut text = b"request=smtpd_access_policy\n".to_vec();
            for i in 1..lines {
                text.extend_from_slice(format!("a{i}=1\n").as_bytes());
            }
            text.push(b'\n');
            text
        };
        assert!(parse(&request(MAX_ATTRIBUTES)).unwrap().is_some());
        let many = parse(&request(MAX_ATTRIBUTES + 1));
        assert!(matches!(many, Err(Unreadable::TooManyAttributes)));
    }
}

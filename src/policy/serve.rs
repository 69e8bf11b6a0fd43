//! One connection, in spawn mode or as one of a daemon's: read a request,
//! answer it, until the peer closes. A request that is not the protocol gets
//! no answer and ends this connection only (SMTPD_POLICY_README: "log and
//! close"); smtpd then uses its default action and opens a new one.

use super::decide::{answer, Settings};
use super::request::{self, Unreadable};
use std::io::{BufReader, Read, Write};

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The peer closed it between requests, or stopped reading replies.
    Closed,
    /// It sent something that is not a policy request; logged.
    Unreadable,
}

/// Serves requests from `input`, writing each reply to `output` in one write.
pub fn connection(input: impl Read, mut output: impl Write, settings: &Settings) -> End {
    let mut input = BufReader::with_capacity(16 * 1024, input);
    let mut line = Vec::new();
    loop {
        let request = match request::read(&mut input, &mut line) {
            Ok(Some(r)) => r,
            Ok(None) => return End::Closed,
            // A peer gone mid-request is a closed connection, not a protocol
            // error worth a log line: smtpd does that when it times out.
            Err(Unreadable::Io(_)) => return End::Closed,
            Err(e) => {
                settings
                    .logger
                    .line(&format!("closing the connection without an answer: {e}"));
                return End::Unreadable;
            }
        };
        let reply = format!("action={}\n\n", answer(settings, &request));
        if output
            .write_all(reply.as_bytes())
            .and_then(|()| output.flush())
            .is_err()
        {
            return End::Closed;
        }
    }
}

//! What the policy service answers and logs: the `action=` wording for each
//! setting of OVERLIMIT_POLICY_ACTION, and the log line of a refusal, worded
//! as rcptcheck-overlimit words its fd 4 reply and its log line so that an
//! administrator reads one language from both programs.

use crate::admit::Admission;
use crate::client::printable;
use crate::refusal;
use crate::time::Time;

/// What to answer for a recipient over the limit (OVERLIMIT_POLICY_ACTION).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `450 4.7.1 TEXT`: the client tries again later (the default).
    Defer,
    /// `550 5.7.1 TEXT`: the recipient is refused for good.
    Reject,
    /// `HOLD TEXT`: the whole message is accepted into Postfix's hold queue,
    /// where it waits for the administrator (`postsuper -H` or `-d`).
    Hold,
}

impl Action {
    /// Reads OVERLIMIT_POLICY_ACTION's value; unset or empty is `defer`.
    pub fn parse(value: Option<&[u8]>) -> Result<Action, String> {
        match value.unwrap_or_default() {
            b"" | b"defer" => Ok(Action::Defer),
            b"reject" => Ok(Action::Reject),
            b"hold" => Ok(Action::Hold),
            other => Err(format!(
                "OVERLIMIT_POLICY_ACTION={}: use defer, reject or hold",
                printable(other)
            )),
        }
    }

    /// The `action=` value for a refusal explained by `text`.
    pub fn answer(self, text: &str) -> String {
        match self {
            Action::Defer => format!("450 4.7.1 {text}"),
            Action::Reject => format!("550 5.7.1 {text}"),
            Action::Hold => format!("HOLD {text}"),
        }
    }
}

/// No opinion: Postfix's next restriction decides.
pub const DUNNO: &str = "DUNNO";

/// The fail-closed answer to an internal error (OVERLIMIT_FAILCLOSED): the
/// client tries again later. The cause is in the log, not in the reply.
pub const TEMPORARY_ERROR: &str = "451 4.3.0 Temporary error checking the sending limit";

/// Longest reply text: well under SMTP's 512-byte reply line.
const MAX_TEXT: usize = 400;

/// The SMTP client's explanation of a refusal, in the engine's one wording
/// (`You reached your limit of 100 recipients per 1h; try again in 12m`).
pub fn refusal_text(client: &[u8], result: &Admission, now: Time) -> String {
    let mut text =
        refusal::text(client, result, now).unwrap_or_else(|| "Sending limit reached".into());
    text.truncate(MAX_TEXT);
    text
}

/// The log line of a refusal, the plug-in's (`refused NAME: limit 100/1h
/// reached (100 counted, room in 12m); recipient X`) and what was answered:
/// `; answered 450`, or `; would answer 450` in monitor mode.
pub fn refusal_log(
    client: &[u8],
    result: &Admission,
    now: Time,
    recipient: &[u8],
    answer: &str,
    monitor: bool,
) -> String {
    let answered = if monitor { "would answer" } else { "answered" };
    format!(
        "{}; {answered} {}",
        refusal::log_line(client, result, now, monitor, recipient),
        answer.split(' ').next().unwrap_or(answer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admit::Full;
    use crate::limits::Item;

    fn full(label: &[u8], max: u64, period: Option<u32>, room_at: Option<Time>) -> Admission {
        Admission {
            full: vec![Full {
                label: label.to_vec(),
                item: Item { max, period },
                count: max,
                room_at,
            }],
            ..Admission::default()
        }
    }

    #[test]
    fn the_text_names_the_limit_and_when_room_frees() {
        let a = full(
            b"a@b.c",
            100,
            Some(3600),
            Some(Time::from_secs(1_000 + 720)),
        );
        assert_eq!(
            refusal_text(b"a@b.c", &a, Time::from_secs(1_000)),
            "You reached your limit of 100 recipients per 1h; try again in 12m"
        );
        let a = full(b"@b.c", 3, None, None);
        assert_eq!(
            refusal_text(b"a@b.c", &a, Time::from_secs(1_000)),
            "Your domain b.c reached its limit of 3 recipients; ask your provider to lift it"
        );
    }

    #[test]
    fn each_action_has_its_code() {
        assert_eq!(Action::parse(None), Ok(Action::Defer));
        assert_eq!(Action::parse(Some(b"")), Ok(Action::Defer));
        assert_eq!(Action::parse(Some(b"hold")), Ok(Action::Hold));
        assert!(Action::parse(Some(b"Reject")).is_err());
        assert_eq!(Action::Defer.answer("t"), "450 4.7.1 t");
        assert_eq!(Action::Reject.answer("t"), "550 5.7.1 t");
        assert_eq!(Action::Hold.answer("t"), "HOLD t");
    }

    #[test]
    fn the_log_line_escapes_what_the_client_sent() {
        let a = full(b"a@b.c", 3, None, None);
        let line = refusal_log(
            b"a@b.c",
            &a,
            Time::from_secs(0),
            b"x\ny",
            "450 4.7.1 text",
            false,
        );
        assert_eq!(
            line,
            "refused a@b.c: limit 3 reached (3 counted, until reset); recipient x\\x0ay; answered 450"
        );
    }
}

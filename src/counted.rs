//! A counter's identity: a client's own, a domain's shared one
//! (`@domain`), or an address range's shared one (`@192.0.2.0/24`). The one
//! place that turns each into its label (stored in the counter, printed by
//! `status`, taken by `reset`) and its file name.

use crate::client::{range_spelled, Client, Net};
use crate::store::{client_file, domain_file};

/// What a counter belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Counted {
    Client(Client),
    Domain(Vec<u8>),
    Range(Net),
}

impl Counted {
    /// What kind of counter it is, as `status --json` and the metrics name
    /// it: `user`, `address`, `domain` or `range`.
    pub fn kind(&self) -> &'static str {
        match self {
            Counted::Client(Client::User(_)) => "user",
            Counted::Client(Client::Ip(_)) => "address",
            Counted::Domain(_) => "domain",
            Counted::Range(_) => "range",
        }
    }

    /// Reads a label as `status` prints it and `reset` takes it; `None` for
    /// an empty name or a bare `@`.
    pub fn from_label(label: &[u8]) -> Option<Counted> {
        match label.strip_prefix(b"@") {
            Some(rest) if range_spelled(rest) => Net::parse(rest).map(|(n, _)| Counted::Range(n)),
            Some(b"") => None,
            Some(rest) => Some(Counted::Domain(rest.to_ascii_lowercase())),
            None => Client::from_name(label).map(Counted::Client),
        }
    }

    pub fn label(&self) -> Vec<u8> {
        match self {
            Counted::Client(c) => c.name(),
            Counted::Domain(d) => [b"@", &d[..]].concat(),
            Counted::Range(n) => format!("@{n}").into_bytes(),
        }
    }

    /// The counter's file name in the counter directory. Aggregates start
    /// with `@`, which no client's file does; a range's holds a `/` and is
    /// therefore encoded, and no domain is spelled as a range.
    pub fn file(&self) -> String {
        match self {
            Counted::Client(c) => client_file(&c.name()),
            Counted::Domain(d) => domain_file(d),
            Counted::Range(n) => domain_file(n.to_string().as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_labels_round_trip() {
        for label in [
            "info@example.com",
            "@example.com",
            "@192.0.2.0/24",
            "2001:db8::1",
        ] {
            let c = Counted::from_label(label.as_bytes()).unwrap();
            assert_eq!(c.label(), label.as_bytes());
        }
        assert_eq!(Counted::from_label(b"@"), None);
        assert!(Counted::from_label(b"@2001:db8::/64")
            .unwrap()
            .file()
            .starts_with("@="));
    }
}

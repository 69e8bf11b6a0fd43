//! Which limits apply to a counter, found by one set of probes whichever
//! store holds the lines: the compiled cdb, or the lines that one pass over
//! the text kept (see `lookup`). Text and cdb differ only in where a key's
//! last line is looked up, never in what is looked up, so they cannot
//! disagree.
//!
//! Precedence for a client's own limits: its own line; else `*@domain` (for
//! users) or the longest matching range (for addresses); else the default
//! line; else unlimited. A user's `@domain` line adds the domain's shared
//! counter; every `@RANGE` line holding an address adds that range's.

use crate::client::{Client, Net};
use crate::control::Key;
use crate::counted::Counted;
use crate::error::Internal;
use crate::limits::Limits;

/// The line that gave a counter its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub limits: Limits,
    /// Line number in the text (1-based).
    pub line: usize,
    pub via: Via,
}

/// How a rule was found, for logs and `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    Own,
    DomainUsers,
    Range(Net),
    Default,
    /// `@domain`: the domain's shared counter.
    Domain,
    /// `@RANGE`: the range's shared counter.
    RangeAggregate(Net),
}

/// Everything that applies to one client. `own == None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub own: Option<Rule>,
    pub domain: Option<Rule>,
    /// The `@RANGE` aggregates holding the client's address, longest first.
    pub ranges: Vec<Rule>,
}

/// Where the last line of each key is kept.
pub trait Lines {
    /// The last line for `key` (`Key::to_bytes`): its number and limits.
    fn rule(&self, key: &[u8]) -> Result<Option<(usize, Limits)>, Internal>;
    /// The prefix lengths present for one address family, of ranges or
    /// (`aggregate`) of `@RANGE` lines, in any order.
    fn lengths(&self, v6: bool, aggregate: bool) -> Result<Vec<u8>, Internal>;
}

fn found(lines: &impl Lines, key: &Key, via: Via) -> Result<Option<Rule>, Internal> {
    Ok(lines
        .rule(&key.to_bytes())?
        .map(|(line, limits)| Rule { limits, line, via }))
}

/// The ranges of `ip`'s family present in `lines`, longest first.
fn nets_of(
    lines: &impl Lines,
    ip: std::net::IpAddr,
    aggregate: bool,
) -> Result<Vec<Net>, Internal> {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let mut lens = lines.lengths(ip.is_ipv6(), aggregate)?;
    lens.retain(|&l| l <= bits);
    lens.sort_unstable_by(|a, b| b.cmp(a));
    lens.dedup();
    Ok(lens.into_iter().map(|len| Net::new(ip, len)).collect())
}

/// Everything that applies to `client`.
pub fn resolve_in(lines: &impl Lines, client: &Client) -> Result<Resolved, Internal> {
    let mut own = found(lines, &Key::Client(client.name()), Via::Own)?;
    let mut domain = None;
    let mut ranges = Vec::new();
    match client {
        Client::User(_) => {
            if let Some(d) = client.domain() {
                if own.is_none() {
                    own = found(lines, &Key::DomainUsers(d.to_vec()), Via::DomainUsers)?;
                }
                domain = found(lines, &Key::Domain(d.to_vec()), Via::Domain)?;
            }
        }
        Client::Ip(ip) => {
            if own.is_none() {
                for net in nets_of(lines, *ip, false)? {
                    own = found(lines, &Key::Range(net), Via::Range(net))?;
                    if own.is_some() {
                        break;
                    }
                }
            }
            for net in nets_of(lines, *ip, true)? {
                let via = Via::RangeAggregate(net);
                ranges.extend(found(lines, &Key::RangeAggregate(net), via)?);
            }
        }
    }
    if own.is_none() {
        own = found(lines, &Key::Default, Via::Default)?;
    }
    Ok(Resolved {
        own,
        domain,
        ranges,
    })
}

/// The limits of one counter: a client's own, or an aggregate's line.
/// `None` is unlimited.
pub fn limits_in(lines: &impl Lines, counted: &Counted) -> Result<Option<Limits>, Internal> {
    let key = match counted {
        Counted::Client(c) => return Ok(resolve_in(lines, c)?.own.map(|r| r.limits)),
        Counted::Domain(d) => Key::Domain(d.clone()),
        Counted::Range(n) => Key::RangeAggregate(*n),
    };
    Ok(lines.rule(&key.to_bytes())?.map(|(_, l)| l))
}

/// The counters that apply to a client, with their limits: its own first
/// (always, so `status` shows who sends most even when unlimited), then its
/// domain's, then its ranges'.
pub fn counters_of(client: &Client, resolved: &Resolved) -> Vec<(Counted, Limits)> {
    let mut out = vec![(
        Counted::Client(client.clone()),
        resolved
            .own
            .as_ref()
            .map(|r| r.limits.clone())
            .unwrap_or_default(),
    )];
    if let (Some(rule), Some(domain)) = (&resolved.domain, client.domain()) {
        out.push((Counted::Domain(domain.to_vec()), rule.limits.clone()));
    }
    for rule in &resolved.ranges {
        if let Via::RangeAggregate(net) = rule.via {
            out.push((Counted::Range(net), rule.limits.clone()));
        }
    }
    out
}

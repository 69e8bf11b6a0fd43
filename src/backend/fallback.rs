//! The outage fallback (`fallback=HOSTS` in `OVERLIMIT_REDIS`), off unless
//! asked for: while the server cannot be reached (connect refused, no
//! answer by the deadline, the connection lost), a decision counts in this
//! host's counter directory against its share of each limit, the limit
//! divided by HOSTS, rounded down, at least 1. So an outage neither stops
//! mail (as `OVERLIMIT_FAILCLOSED` would) nor opens the gate (as failing
//! open would): HOSTS hosts together let at most about the limit through.
//!
//! A server that answers, but wrongly (a bad password, a damaged reply,
//! too many lost races), is no outage: that stays an internal error, so a
//! mistake is not hidden behind the local budget.
//!
//! The local counts are not merged back by themselves when the server
//! returns; `overlimit migrate` adds them to the shared ones and empties
//! the directory again.

use super::Store;
use crate::limits::{Item, Limits};
use std::path::PathBuf;

/// Where and how a decision counts while the server is away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// The local counter directory (`OVERLIMITDIR`).
    pub dir: PathBuf,
    /// How many hosts share each limit.
    pub hosts: u32,
}

impl Fallback {
    /// This host's share of `limits`: each maximum divided by the hosts,
    /// rounded down, at least 1.
    pub fn share(&self, limits: &Limits) -> Limits {
        Limits {
            items: limits
                .items
                .iter()
                .map(|i| Item {
                    max: (i.max / u64::from(self.hosts)).max(1),
                    period: i.period,
                })
                .collect(),
        }
    }

    /// The line logged for a decision counted locally: what failed, and
    /// what was done instead.
    pub fn note(&self, outage: &crate::error::Internal) -> String {
        format!(
            "{outage}; counted in {} against 1/{} of each limit (fallback={})",
            self.dir.display(),
            self.hosts,
            self.hosts
        )
    }

    /// The local store to count in.
    pub fn store(&self) -> Store {
        Store::Files(self.dir.clone())
    }
}

impl Store {
    /// After a failed step: the local budget to count against instead, when
    /// the address asks for one and the failure was the server being out of
    /// reach; `None` otherwise (files, no `fallback=`, a wrong answer).
    pub fn fallback(&self) -> Option<Fallback> {
        match self {
            Store::Files(_) => None,
            Store::Redis(s) if s.outage => Some(Fallback {
                dir: s.dir.clone(),
                hosts: s.server.fallback?,
            }),
            Store::Redis(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_the_limit_over_the_hosts_rounded_down_at_least_one() {
        let f = Fallback {
            dir: PathBuf::from("/x"),
            hosts: 3,
        };
        let limits = Limits {
            items: vec![
                Item {
                    max: 100,
                    period: None,
                },
                Item {
                    max: 2,
                    period: Some(60),
                },
                Item {
                    max: 9,
                    period: Some(3600),
                },
            ],
        };
        let shared: Vec<(u64, Option<u32>)> = f
            .share(&limits)
            .items
            .iter()
            .map(|i| (i.max, i.period))
            .collect();
        assert_eq!(shared, [(33, None), (1, Some(60)), (3, Some(3600))]);
    }
}

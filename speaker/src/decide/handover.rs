//! Break before make when an IP moves between two live nodes.
//!
//! Every speaker elects from the same view, but each applies the result at its own moment (its
//! own timers, heartbeat delivery, scheduling). When a node comes back after its hold-down, the
//! returning node and the current owner would switch at almost the same instant — and if the
//! new owner is a millisecond early, both answer for the IP. So a node that gains an IP from an
//! owner that is still alive waits a short delay before announcing it; the old owner stops at
//! once. An IP whose owner died, left or was never there is taken at once: failover is not
//! slowed, only hand-backs between live nodes.
//!
//! Pure: the caller passes the election's result, the live members and the time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::decide::election::NodeName;

/// The hand-over state: who owned each IP at the last election, and the IPs waiting to be taken.
#[derive(Clone, Debug)]
pub struct Handover {
    delay: Duration,
    previous: BTreeMap<IpAddr, NodeName>,
    pending: BTreeMap<IpAddr, Instant>,
}

impl Handover {
    /// A node that gains an IP from a live owner announces it `delay` later.
    pub fn new(delay: Duration) -> Handover {
        Handover {
            delay,
            previous: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Given this election's owners (every IP), the live members and the IPs this node
    /// announces now, returns the IPs of `me` to announce now.
    pub fn admit(
        &mut self,
        me: &NodeName,
        owners: &BTreeMap<IpAddr, Option<NodeName>>,
        alive: &BTreeSet<NodeName>,
        announcing: &BTreeSet<IpAddr>,
        now: Instant,
    ) -> BTreeSet<IpAddr> {
        let mut admitted = BTreeSet::new();
        let mut pending = BTreeMap::new();
        for (ip, owner) in owners {
            if owner.as_ref() != Some(me) {
                continue;
            }
            let due = if announcing.contains(ip) {
                None
            } else if let Some(due) = self.pending.get(ip) {
                Some(*due)
            } else {
                match self.previous.get(ip) {
                    Some(previous) if previous != me && alive.contains(previous) => {
                        Some(now + self.delay)
                    }
                    _ => None,
                }
            };
            match due {
                Some(due) if now < due => {
                    pending.insert(*ip, due);
                }
                _ => {
                    admitted.insert(*ip);
                }
            }
        }
        self.pending = pending;
        self.previous = owners
            .iter()
            .filter_map(|(ip, o)| Some((*ip, o.clone()?)))
            .collect();
        admitted
    }

    /// When the next waiting IP may be announced (the election must re-run then).
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn owners(list: &[(u8, Option<&str>)]) -> BTreeMap<IpAddr, Option<NodeName>> {
        list.iter()
            .map(|(l, o)| (ip(*l), o.map(NodeName::new)))
            .collect()
    }

    fn names(list: &[&str]) -> BTreeSet<NodeName> {
        list.iter().map(|n| NodeName::new(*n)).collect()
    }

    #[test]
    fn from_a_live_owner_after_the_delay_from_a_dead_one_at_once() {
        let me = NodeName::new("a");
        let mut h = Handover::new(Duration::from_millis(200));
        let t0 = Instant::now();
        let none = BTreeSet::new();
        // First election: b owns .1 and .2.
        let first = owners(&[(1, Some("b")), (2, Some("b"))]);
        assert!(
            h.admit(&me, &first, &names(&["a", "b"]), &none, t0)
                .is_empty()
        );
        // b is alive but .1 moves to us (say b's hold-down... or ours ended): wait.
        let second = owners(&[(1, Some("a")), (2, Some("b"))]);
        let t1 = t0 + Duration::from_millis(10);
        assert!(
            h.admit(&me, &second, &names(&["a", "b"]), &none, t1)
                .is_empty()
        );
        assert_eq!(h.next_due(), Some(t1 + Duration::from_millis(200)));
        // Another election before the delay is up (the previous owner is now us): still wait.
        let t2 = t1 + Duration::from_millis(100);
        assert!(
            h.admit(&me, &second, &names(&["a", "b"]), &none, t2)
                .is_empty()
        );
        // The delay is up.
        let t3 = t1 + Duration::from_millis(200);
        assert_eq!(
            h.admit(&me, &second, &names(&["a", "b"]), &none, t3),
            BTreeSet::from([ip(1)])
        );
        assert_eq!(h.next_due(), None);
        // b dies: .2 is taken at once.
        let third = owners(&[(1, Some("a")), (2, Some("a"))]);
        let announcing = BTreeSet::from([ip(1)]);
        assert_eq!(
            h.admit(&me, &third, &names(&["a"]), &announcing, t3),
            BTreeSet::from([ip(1), ip(2)])
        );
    }

    #[test]
    fn a_new_ip_or_one_nobody_held_is_taken_at_once() {
        let me = NodeName::new("a");
        let mut h = Handover::new(Duration::from_millis(200));
        let now = Instant::now();
        let none = BTreeSet::new();
        h.admit(&me, &owners(&[(1, None)]), &names(&["a", "b"]), &none, now);
        assert_eq!(
            h.admit(
                &me,
                &owners(&[(1, Some("a")), (2, Some("a"))]),
                &names(&["a", "b"]),
                &none,
                now
            ),
            BTreeSet::from([ip(1), ip(2)])
        );
    }

    #[test]
    fn an_ip_that_moves_away_while_waiting_is_forgotten() {
        let me = NodeName::new("a");
        let mut h = Handover::new(Duration::from_millis(200));
        let now = Instant::now();
        let none = BTreeSet::new();
        let alive = names(&["a", "b", "c"]);
        h.admit(&me, &owners(&[(1, Some("b"))]), &alive, &none, now);
        assert!(
            h.admit(&me, &owners(&[(1, Some("a"))]), &alive, &none, now)
                .is_empty()
        );
        h.admit(&me, &owners(&[(1, Some("c"))]), &alive, &none, now);
        assert_eq!(h.next_due(), None);
    }
}

//! A whole cluster of speakers, simulated, with the fence's promises checked at every step.
//!
//! Every decision module is wired as the runtime wires
//! them (membership → fence → gate; hold-down, election, hand-over → the readers' snapshot),
//! over a network whose links fail one way or both, with random delays, and processes that
//! stall. The properties the fencing argument promises are checked at every step:
//!
//! - **never two answers**: at no instant do two nodes answer for one IP (a node answers when
//!   its snapshot owns the IP and its gate allows the snapshot's period, as the readers check);
//! - **every IP answered**: once a majority is connected both ways (and stays so for the
//!   dead-after, the hold-down and the hand-over delay), every IP is answered by one node.
//!
//! [`Rules::Legacy`] runs the same cluster under the rules the speaker had before: quorum
//! counted on datagrams heard (one way), death on this node's own hearing only, no fence
//! period, answers from the snapshot without a gate. The tests at the end show the checks
//! catching what the issue reported of them: two answers with loss out of the owner and after
//! a stall, an IP left dark with loss into the owner.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::decide::election::{Candidate, ElectionKey, NodeName, owner};
use crate::decide::eligibility::{HoldDown, Liveness};
use crate::decide::fencing::{Evidence, Fence, Gate, Timing, Verdict};
use crate::decide::handover::Handover;
use crate::decide::membership::{Heartbeat, Membership, Rejection};
use crate::decide::subnets::Link;

const STEP: Duration = Duration::from_millis(5);
const HANDOVER: Duration = Duration::from_millis(200);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A tiny deterministic generator (xorshift64*) for delays, seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Which rules the speakers follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rules {
    /// Today's: two-way quorum, liveness direct or reported, periods, the gate.
    Issue8,
    /// Before: quorum on one-way hearing, own hearing for death, answers without a gate.
    Legacy,
}

/// One speaker: the pure state the runtime keeps, and what its readers answer from.
struct Speaker {
    name: NodeName,
    membership: Membership,
    fence: Fence,
    gate: Gate,
    hold: HoldDown,
    handover: Handover,
    /// The readers' snapshot: the owned IPs and the period they were elected in.
    owned: BTreeSet<IpAddr>,
    period: u32,
    next_tick: Instant,
    stalled_until: Option<Instant>,
    /// Legacy rules: when each node was last heard (any authentic datagram), and since when
    /// this node had quorum.
    legacy_heard: BTreeMap<usize, Instant>,
    legacy_since: Option<Instant>,
    /// Legacy rules: what the last election saw (it re-ran only when members came or went,
    /// or its own quorum turned: a peer's refreshed heartbeat did not wake it).
    legacy_seen: Option<(BTreeSet<usize>, bool, BTreeSet<usize>)>,
    /// Legacy rules: the other nodes' membership ages as of the last election.
    legacy_ages: Vec<Option<Instant>>,
}

/// One phase of the schedule: which directed links deliver, and which node (if any) stalls.
#[derive(Clone, Debug)]
struct Phase {
    length_ms: u64,
    /// `up[from][to]`.
    up: Vec<Vec<bool>>,
    stall: Option<(usize, u64)>,
}

/// The witness Lease as the API server holds it: its holder and when it last wrote.
#[derive(Clone, Copy, Debug, Default)]
struct Lease {
    holder: Option<(usize, Instant)>,
}

/// How long a write is relied on, and when an unrenewed Lease may be taken (the witness's).
const RENEW_DEADLINE: Duration = Duration::from_secs(6);
const LEASE_DURATION: Duration = Duration::from_secs(10);

struct Cluster {
    rules: Rules,
    lease: Lease,
    timing: Timing,
    nodes: Vec<Speaker>,
    counted: BTreeSet<NodeName>,
    ips: Vec<IpAddr>,
    in_flight: Vec<(Instant, usize, usize, Heartbeat)>,
    rng: Rng,
    max_delay_ms: u64,
    now: Instant,
}

impl Cluster {
    fn new(n: usize, seed: u64, max_delay_ms: u64) -> Cluster {
        Cluster::with_rules(Rules::Issue8, n, seed, max_delay_ms)
    }

    fn with_rules(rules: Rules, n: usize, seed: u64, max_delay_ms: u64) -> Cluster {
        let now = Instant::now() + Duration::from_secs(1000);
        let timing = Timing::DEFAULT;
        let mut rng = Rng(seed | 1);
        let nodes: Vec<Speaker> = (0..n)
            .map(|i| Speaker {
                name: NodeName::new(format!("n{i}")),
                membership: Membership::new(
                    NodeName::new(format!("n{i}")),
                    rng.next(),
                    timing.dead_after,
                    now,
                ),
                fence: Fence::new(timing, now),
                gate: Gate::new(now - Duration::from_secs(1)),
                hold: HoldDown::new(timing.hold_down),
                handover: Handover::new(HANDOVER),
                owned: BTreeSet::new(),
                period: 0,
                next_tick: now + ms(rng.below(100)),
                stalled_until: None,
                legacy_heard: BTreeMap::new(),
                legacy_since: None,
                legacy_seen: None,
                legacy_ages: Vec::new(),
            })
            .collect();
        Cluster {
            rules,
            lease: Lease::default(),
            timing,
            counted: nodes.iter().map(|s| s.name.clone()).collect(),
            nodes,
            ips: (1..=8)
                .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
                .collect(),
            in_flight: Vec::new(),
            rng,
            max_delay_ms,
            now,
        }
    }

    /// The legacy fence, judged on the tick: a strict majority heard within the withdraw
    /// window; the membership age restarts while it is not.
    fn legacy_judge(&mut self, i: usize) {
        let now = self.now;
        let window = self.timing.withdraw_after;
        let s = &mut self.nodes[i];
        let heard = 1 + s
            .legacy_heard
            .values()
            .filter(|t| now.saturating_duration_since(**t) < window)
            .count();
        let quorum = heard * 2 > self.counted.len();
        s.legacy_since = if quorum {
            Some(s.legacy_since.unwrap_or(now))
        } else {
            None
        };
    }

    /// Judges node `i`'s fence; when that takes the witness Lease, judges again at once (the
    /// witness wakes the heartbeat task when its holder changes).
    fn judge(&mut self, i: usize) -> Verdict {
        let before = self.lease.holder.map(|(h, _)| h);
        let verdict = self.judge_once(i);
        if self.lease.holder.map(|(h, _)| h) != before {
            return self.judge_once(i);
        }
        verdict
    }

    fn judge_once(&mut self, i: usize) -> Verdict {
        let now = self.now;
        // What the witness says now: its holder, relied on until its last write plus the
        // renew deadline.
        let holder = self
            .lease
            .holder
            .filter(|(_, wrote)| now < *wrote + RENEW_DEADLINE)
            .map(|(h, wrote)| (NodeName::new(format!("n{h}")), wrote + RENEW_DEADLINE));
        let s = &mut self.nodes[i];
        let contacts: Vec<(NodeName, Instant)> = s
            .membership
            .contacts()
            .map(|(n, c)| (n.clone(), c))
            .collect();
        let verdict = s.fence.judge(
            Evidence {
                me: &s.name,
                known: &self.counted,
                contacts: &contacts,
                keyed: true,
                witness: holder.as_ref().map(|(n, u)| (n, *u)),
            },
            now,
        );
        s.gate.publish(&verdict);
        // In a tie the node asks for the Lease: it takes it when free or unrenewed for the
        // Lease duration, renews it when its own; out of a tie a holder gives it back.
        match self.lease.holder {
            Some((h, _)) if h == i && !verdict.tie => self.lease.holder = None,
            Some((h, _)) if h == i => self.lease.holder = Some((i, now)),
            Some((_, wrote)) if verdict.tie && now >= wrote + LEASE_DURATION => {
                self.lease.holder = Some((i, now));
            }
            None if verdict.tie => self.lease.holder = Some((i, now)),
            _ => {}
        }
        verdict
    }

    fn running(&self, i: usize) -> bool {
        self.nodes[i].stalled_until.is_none_or(|u| self.now >= u)
    }

    /// Heartbeats due, and deliveries due (a stalled node reads its socket when it resumes).
    fn network(&mut self, up: &[Vec<bool>]) {
        for (i, links) in up.iter().enumerate() {
            if !self.running(i) || self.now < self.nodes[i].next_tick {
                continue;
            }
            if self.rules == Rules::Legacy {
                self.legacy_judge(i);
            }
            let verdict = self.judge(i);
            let now = self.now;
            let s = &mut self.nodes[i];
            // A stalled timer fires once on resume (MissedTickBehavior::Delay).
            s.next_tick = now + self.timing.interval;
            let own = verdict.own_state(vec![Link::named("eth0")], false, now);
            let hb = s.membership.outgoing(own, now);
            for (to, link_up) in links.iter().enumerate() {
                if to != i && *link_up {
                    let delay = ms(self.rng.below(self.max_delay_ms + 1));
                    self.in_flight.push((now + delay, i, to, hb.clone()));
                }
            }
        }
        self.in_flight.sort_by_key(|f| f.0);
        let mut later = Vec::new();
        for (at, from, to, hb) in std::mem::take(&mut self.in_flight) {
            if at > self.now || !self.running(to) {
                later.push((at, from, to, hb));
                continue;
            }
            let s = &mut self.nodes[to];
            s.legacy_heard.insert(from, self.now);
            let (node, incarnation, seq) = (NodeName::new(hb.node.clone()), hb.incarnation, hb.seq);
            match s.membership.receive(hb, self.now) {
                Err(Rejection::Unproven) => {
                    s.membership
                        .heard_unproven(&node, incarnation, seq, self.now)
                }
                Ok(_) => {
                    self.judge(to);
                }
                Err(_) => {}
            }
        }
        self.in_flight = later;
    }

    /// The legacy election: alive is heard by this node within dead-after; a node's
    /// hold-down from the age it reported (taken here from its own state).
    fn legacy_elect(&mut self) {
        let now = self.now;
        let since: Vec<Option<Instant>> = self.nodes.iter().map(|s| s.legacy_since).collect();
        for i in 0..self.nodes.len() {
            if !self.running(i) {
                continue;
            }
            let dead_after = self.timing.dead_after;
            let hold = self.timing.hold_down;
            let s = &mut self.nodes[i];
            let alive_set: BTreeSet<usize> = s
                .legacy_heard
                .iter()
                .filter(|(_, t)| now.saturating_duration_since(**t) < dead_after)
                .map(|(j, _)| *j)
                .collect();
            let past_hold_down = |ages: &[Option<Instant>]| -> BTreeSet<usize> {
                (0..since.len())
                    .filter(|&j| {
                        let age = if j == i {
                            s.legacy_since
                        } else {
                            ages.get(j).copied().flatten()
                        };
                        age.is_some_and(|t| now.saturating_duration_since(t) >= hold)
                    })
                    .collect()
            };
            let seen = (
                alive_set.clone(),
                s.legacy_since.is_some(),
                past_hold_down(&s.legacy_ages),
            );
            let handover_due = s.handover.next_due().is_some_and(|d| d <= now);
            if s.legacy_seen.as_ref() == Some(&seen) && !handover_due {
                continue;
            }
            // Something woke the election: it reads the ages the members report now.
            s.legacy_ages = since.clone();
            s.legacy_seen = Some((alive_set.clone(), seen.1, past_hold_down(&s.legacy_ages)));
            if s.legacy_since.is_none() {
                s.owned.clear();
                continue;
            }
            let ready = past_hold_down(&s.legacy_ages);
            let eligible: Vec<NodeName> = (0..since.len())
                .filter(|j| (*j == i || alive_set.contains(j)) && ready.contains(j))
                .map(|j| NodeName::new(format!("n{j}")))
                .collect();
            let owners = owners(&self.ips, &eligible);
            let alive: BTreeSet<NodeName> = eligible.iter().cloned().collect();
            s.owned = s.handover.admit(&s.name, &owners, &alive, &s.owned, now);
        }
    }

    /// Every running node's election, as `runtime/election.rs` runs it.
    fn elect(&mut self) {
        if self.rules == Rules::Legacy {
            return self.legacy_elect();
        }
        let now = self.now;
        for i in 0..self.nodes.len() {
            if !self.running(i) {
                continue;
            }
            let s = &mut self.nodes[i];
            let verdict = s.fence.current(now);
            let announcing: BTreeSet<NodeName> = s
                .membership
                .alive(now)
                .filter(|(n, k)| k.state.may_announce && self.counted.contains(*n))
                .map(|(n, _)| n.clone())
                .collect();
            let members: Vec<(NodeName, Instant)> = announcing
                .iter()
                .filter_map(|n| Some((n.clone(), s.membership.known(n)?.since)))
                .chain(
                    verdict
                        .period_alive
                        .then(|| (s.name.clone(), verdict.member_since)),
                )
                .collect();
            s.hold.set_members(members);
            let eligible: Vec<NodeName> = self
                .counted
                .iter()
                .filter(|n| {
                    let live = if **n == s.name {
                        verdict.period_alive
                    } else {
                        s.membership.is_alive(n, now)
                            && s.membership.known(n).is_some_and(|k| k.state.may_announce)
                    };
                    live && s.hold.liveness(n, now) == Liveness::Alive
                })
                .cloned()
                .collect();
            let owners = if verdict.period_alive {
                owners(&self.ips, &eligible)
            } else {
                BTreeMap::new()
            };
            let mut answering = announcing;
            answering.insert(s.name.clone());
            let owned = s
                .handover
                .admit(&s.name, &owners, &answering, &s.owned, now);
            s.owned = owned;
            s.period = verdict.period;
        }
    }

    /// Which nodes answer for each IP right now, as their readers would.
    fn answering(&self) -> BTreeMap<IpAddr, Vec<usize>> {
        let mut out: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (i, s) in self.nodes.iter().enumerate() {
            if !self.running(i) {
                continue;
            }
            for ip in &s.owned {
                if self.rules == Rules::Legacy || s.gate.allows(s.period, self.now) {
                    out.entry(*ip).or_default().push(i);
                }
            }
        }
        out
    }

    fn check_never_two(&self) -> Result<(), String> {
        for (ip, who) in self.answering() {
            if who.len() > 1 {
                return Err(format!("{ip} answered by {who:?} at +{:?}", self.now));
            }
        }
        Ok(())
    }

    /// Runs one phase, checking at every step.
    fn run(&mut self, phase: &Phase) -> Result<(), String> {
        if let Some((node, stall_ms)) = phase.stall {
            let until = self.now + ms(stall_ms);
            self.nodes[node].stalled_until = Some(until);
        }
        let end = self.now + ms(phase.length_ms);
        let mut step = 0u64;
        while self.now < end {
            // A node resuming answers from what it had before anything else runs: checked
            // before the network and the elections move.
            self.check_never_two()?;
            self.network(&phase.up);
            // The main loop runs behind the heartbeats (every other step here).
            if step.is_multiple_of(2) {
                self.elect();
            }
            step += 1;
            self.check_never_two()?;
            self.now += STEP;
        }
        Ok(())
    }
}

/// The owner of each IP among `eligible` (rendezvous hashing, no preferences).
fn owners(ips: &[IpAddr], eligible: &[NodeName]) -> BTreeMap<IpAddr, Option<NodeName>> {
    ips.iter()
        .map(|ip| {
            let candidates = eligible.iter().map(|node| Candidate {
                node,
                preference: 0,
            });
            (*ip, owner(ElectionKey::new(*ip), candidates).cloned())
        })
        .collect()
}

fn all_up(n: usize) -> Vec<Vec<bool>> {
    vec![vec![true; n]; n]
}

fn phases(n: usize) -> impl Strategy<Value = Vec<Phase>> {
    let phase = (
        100u64..3000,
        proptest::collection::vec(
            proptest::collection::vec(proptest::bool::weighted(0.7), n),
            n,
        ),
        proptest::option::weighted(0.3, (0..n, 50u64..2500)),
    )
        .prop_map(|(length_ms, up, stall)| Phase {
            length_ms,
            up,
            stall,
        });
    proptest::collection::vec(phase, 1..8)
}

fn scenario() -> impl Strategy<Value = (usize, u64, u64, Vec<Phase>)> {
    (2usize..=5).prop_flat_map(|n| (Just(n), any::<u64>(), 0u64..40, phases(n)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random one-way and two-way losses, delays and stalls: never two answers for one IP;
    /// and once every link is up again, every IP is answered.
    #[test]
    fn never_two_answers_and_every_ip_answered_once_healed(
        (n, seed, max_delay_ms, schedule) in scenario(),
    ) {
        let mut cluster = Cluster::new(n, seed, max_delay_ms);
        // Start: all connected long enough to elect.
        let settle = Phase { length_ms: 5000, up: all_up(n), stall: None };
        cluster.run(&settle).map_err(TestCaseError::fail)?;
        for phase in &schedule {
            cluster.run(phase).map_err(TestCaseError::fail)?;
        }
        // Healed: a stall still running, dead-after, a hold-down, a hand-over, and margin.
        let heal = Phase { length_ms: 7000, up: all_up(n), stall: None };
        cluster.run(&heal).map_err(TestCaseError::fail)?;
        let answered = cluster.answering();
        for ip in &cluster.ips {
            prop_assert_eq!(answered.get(ip).map(Vec::len), Some(1), "{} unanswered", ip);
        }
    }
}

/// The cases the issue names, each on its own.
fn named(n: usize, cut: impl Fn(usize, usize) -> bool, length_ms: u64) -> Phase {
    let up = (0..n)
        .map(|from| (0..n).map(|to| !cut(from, to)).collect())
        .collect();
    Phase {
        length_ms,
        up,
        stall: None,
    }
}

/// The owner of the first IP once the cluster settled.
fn settled(n: usize) -> (Cluster, usize) {
    settled_under(Rules::Issue8, n)
}

fn settled_under(rules: Rules, n: usize) -> (Cluster, usize) {
    let mut cluster = Cluster::with_rules(rules, n, 7, 5);
    cluster
        .run(&Phase {
            length_ms: 5000,
            up: all_up(n),
            stall: None,
        })
        .unwrap();
    let ip = cluster.ips[0];
    let owner = cluster.answering()[&ip][0];
    (cluster, owner)
}

#[test]
fn one_way_loss_into_the_owner_moves_its_ips_while_the_loss_lasts() {
    let (mut c, owner) = settled(3);
    let ip = c.ips[0];
    c.run(&named(3, |_, to| to == owner, 2000)).unwrap();
    let now = c.answering();
    let by = now.get(&ip).cloned().unwrap_or_default();
    assert_eq!(by.len(), 1, "{ip} answered by {by:?}");
    assert_ne!(
        by[0], owner,
        "the owner that hears nobody must have withdrawn"
    );
    // Every IP is answered during the loss, by the two nodes that still have a majority.
    assert!(
        c.ips
            .iter()
            .all(|ip| now.get(ip).is_some_and(|w| w.len() == 1))
    );
}

#[test]
fn one_way_loss_out_of_the_owner_moves_its_ips() {
    let (mut c, owner) = settled(3);
    let ip = c.ips[0];
    c.run(&named(3, |from, _| from == owner, 2000)).unwrap();
    let by = c.answering().get(&ip).cloned().unwrap_or_default();
    assert_eq!(by.len(), 1);
    assert_ne!(by[0], owner);
}

#[test]
fn one_way_loss_between_two_non_owners_changes_nothing() {
    let (mut c, owner) = settled(3);
    let before = c.answering();
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let (x, y) = (others[0], others[1]);
    c.run(&named(3, |from, to| from == x && to == y, 3000))
        .unwrap();
    assert_eq!(c.answering(), before, "same members, same owners");
}

#[test]
fn a_stalled_owner_never_answers_from_before_its_stall_and_is_held_down() {
    let (mut c, owner) = settled(3);
    let ip = c.ips[0];
    c.run(&Phase {
        length_ms: 2000,
        up: all_up(3),
        stall: Some((owner, 1500)),
    })
    .unwrap();
    // Resumed 500 ms ago: it must not have taken its IPs back (hold-down: 3 s).
    let by = c.answering().get(&ip).cloned().unwrap_or_default();
    assert_eq!(by.len(), 1);
    assert_ne!(by[0], owner);
    // After its hold-down and the hand-over delay, the hash gives the IP back to it.
    c.run(&named(3, |_, _| false, 4000)).unwrap();
    assert_eq!(c.answering().get(&ip).cloned(), Some(vec![owner]));
}

#[test]
fn the_checks_catch_what_the_legacy_rules_did() {
    // Loss out of the owner: it still hears a majority, the others declare it dead.
    let (mut c, owner) = settled_under(Rules::Legacy, 3);
    let two = c.run(&named(3, |from, _| from == owner, 2000));
    assert!(two.is_err(), "legacy rules: expected two answers, got none");
    // A stall longer than dead-after: the resumed owner answers from its old snapshot.
    let (mut c, owner) = settled_under(Rules::Legacy, 3);
    let two = c.run(&Phase {
        length_ms: 2000,
        up: all_up(3),
        stall: Some((owner, 1500)),
    });
    assert!(
        two.is_err(),
        "legacy rules: expected two answers after the stall"
    );
    // Loss into the owner: it withdraws, the others still hear it: its IPs stay dark.
    let (mut c, owner) = settled_under(Rules::Legacy, 3);
    let ip = c.ips[0];
    c.run(&named(3, |_, to| to == owner, 3000)).unwrap();
    assert_eq!(
        c.answering().get(&ip),
        None,
        "legacy rules: expected {ip} dark"
    );
}

#[test]
fn a_two_node_cluster_fails_over_through_the_witness_and_a_split_answers_once() {
    // The owner's speaker dies (stalled for good): the survivor is half, takes the witness
    // within the grace, and answers everything within dead-after.
    let (mut c, owner) = settled(2);
    c.run(&Phase {
        length_ms: 2000,
        up: all_up(2),
        stall: Some((owner, 60_000)),
    })
    .unwrap();
    let survivor = 1 - owner;
    let now = c.answering();
    assert!(
        c.ips.iter().all(|ip| now.get(ip) == Some(&vec![survivor])),
        "{now:?}"
    );
    // Four nodes split 2/2 by membership only: one side answers, never both.
    let (mut c, _) = settled(4);
    let side = |i: usize| i < 2;
    c.run(&named(4, |from, to| side(from) != side(to), 4000))
        .unwrap();
    let now = c.answering();
    let sides: BTreeSet<bool> = now.values().flatten().map(|i| side(*i)).collect();
    assert_eq!(sides.len(), 1, "{now:?}");
    assert!(
        c.ips
            .iter()
            .all(|ip| now.get(ip).is_some_and(|w| w.len() == 1))
    );
}

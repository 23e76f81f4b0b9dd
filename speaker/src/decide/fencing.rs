//! Self-fencing: the one answer to "may this node announce now?", and the timing rules that
//! make the answer safe. Nothing else in the speaker judges it: the heartbeat task asks
//! [`Fence::judge`] on every heartbeat sent and received, and publishes the instant the gate
//! closes; the ARP/NDP readers and the gratuitous sender check that instant, with the clock,
//! at the moment they send (a stalled process that resumes finds its gate closed).
//!
//! # The rule
//!
//! *K* is the set of speakers that count: the Nodes whose speaker pod is ready
//! (`crate::decide::inputs::counted_speakers`). A peer is in *two-way contact* at `t` when it
//! echoed a heartbeat of ours sent after `t − W` (`W`, the withdraw window): it heard us after
//! that moment and we heard it after that (`crate::decide::membership`). The gate of node `A`
//! is open at `t` when `A` is in *K* and either a strict majority of *K* (`A` included) is in
//! two-way contact with it, or exactly half is and the witness Lease's holder, relied upon at
//! `t`, is among them. [`open_until`] gives the instant the gate closes if nothing more is
//! heard; nothing is answered past it.
//!
//! A *period* is a stretch of time the gate stays open, bridging closures shorter than the
//! grace `G = D − 2W − D/500` (`D`, dead-after): a closure that lasts `G` ends the period, and
//! the next opening starts a new one, with a new hold-down (`H`): a node back from any
//! silence — a cut, a stall of its own, a lost majority — owns nothing for `H`, whatever it
//! believes about itself. Heartbeats say whether the sender's period is alive (`may_announce`)
//! and how old it is; peers exclude a node whose period ended at once, and time its hold-down
//! from the age it reports.
//!
//! # Why two nodes never answer for one IP
//!
//! Every speaker elects from the same facts (the API's objects, the membership's states), so
//! an IP changes hands only when its owner `A` becomes ineligible at the taker `B`: (1) `B`
//! declares `A` dead, (2) `A` says its period ended or it is held down, or (3) a configuration
//! change, where `B` waits the hand-over delay (`crate::decide::handover`).
//!
//! (1) `B` declares `A` dead at `t` (its gate open) when neither `B` nor any peer whose report
//! it holds heard `A` within `D`. Each member `P` of `B`'s two-way set sent its latest report
//! after `t − W` (it echoed a heartbeat `B` sent after then), saying it had not heard `A` since
//! before `t − D` (reported ages only make `B`'s estimate later: `membership.rs`). So no member
//! of `B`'s set heard `A` during `[t − D, t − W]`. Had `A`'s gate been open at any
//! `τ ∈ [t − D + W, t − W]`, its own set, which heard `A` within `(τ − W, τ] ⊆ [t − D, t − W]`,
//! would share a member with `B`'s: two majorities of *K* intersect, a majority and a half too,
//! and two halves share the one holder (the witness Lease is relied upon by one holder at a
//! time, and `D + W` is shorter than the Lease's `lease_duration − renew_deadline`, so no other
//! holder can appear between `τ` and `t`). So `A`'s gate was closed for all of that interval,
//! `D − 2W` long, which is more than `G`: `A`'s period ended, and whatever it opens since is a
//! new period less than `W` old at `t`, still held down (`H > W`). `A` answers nothing at `t`.
//!
//! (2) `A` says its period ended at some moment `e`; `B` may act on it while `A` looks alive
//! to `B` (at most `D` after the report) and the report itself is at most `D` older than `B`
//! thinks (it echoed a heartbeat of `B`'s sent within `D`). `A`'s next period starts after
//! `e` and owns nothing for `H ≥ 2D`, so `A` is silent for as long as `B` can be acting on the
//! report. When `A`'s new period is reported, `B` times its hold-down from the *earliest*
//! moment it can have started, so `B` gives the IP back no later than `A` takes it.
//!
//! The bound is exact on every node's own monotonic clock, up to the rate difference between
//! two nodes' clocks (NTP slews at most 500 ppm), which the `D/500` term covers. [`Timing::check`]
//! refuses flag values that break it: `D < 2W + D/500`, `H < 2D`, `W ≤ 2 × interval` (a peer
//! echoes a heartbeat up to two intervals after it was sent, so a shorter window would close
//! the gate between two heartbeats), and `D + W` not below the witness Lease's margin.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::decide::election::NodeName;
use crate::decide::membership::MemberState;

/// The membership's timings, whose relations make fencing safe (see the module's argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Between two heartbeats.
    pub interval: Duration,
    /// `W`: a peer counts toward quorum while it echoed a heartbeat sent within it.
    pub withdraw_after: Duration,
    /// `D`: a node not heard (by us or a peer) within it is dead.
    pub dead_after: Duration,
    /// `H`: a node that (re)joins owns nothing for this long.
    pub hold_down: Duration,
}

/// The longest timing accepted: beyond it `Instant` arithmetic could overflow, and nothing
/// sensible needs more.
pub const MAX_TIMING: Duration = Duration::from_secs(3600);

/// A timing that breaks the fencing argument, or that the speaker cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// A zero heartbeat interval.
    #[error("--heartbeat-ms must be above 0")]
    ZeroInterval,
    /// Some timing is longer than [`MAX_TIMING`].
    #[error("{0} is longer than an hour")]
    TooLong(&'static str),
    /// `W ≤ 2 × interval`.
    #[error(
        "--withdraw-after-ms ({w} ms) must be longer than two heartbeat intervals ({i} ms each): a peer echoes a heartbeat up to two intervals after it was sent, so the fence would close between two heartbeats"
    )]
    WithdrawTooShort {
        /// W in ms.
        w: u128,
        /// The interval in ms.
        i: u128,
    },
    /// `D < 2W + D/500`.
    #[error(
        "--dead-after-ms ({d} ms) must be at least twice --withdraw-after-ms ({w} ms) plus 0.2 % (at least {min} ms): otherwise a node cut off one way could still answer when the others take its IPs over"
    )]
    DeadTooSoon {
        /// D in ms.
        d: u128,
        /// W in ms.
        w: u128,
        /// The smallest D accepted.
        min: u128,
    },
    /// `H < 2D`.
    #[error(
        "--hold-down-ms ({h} ms) must be at least twice --dead-after-ms ({d} ms): a node whose fence closed must stay silent for as long as its peers may act on that news"
    )]
    HoldDownTooShort {
        /// H in ms.
        h: u128,
        /// D in ms.
        d: u128,
    },
    /// `D + W ≥ lease_duration − renew_deadline` of the witness.
    #[error(
        "--dead-after-ms plus --withdraw-after-ms ({sum} ms) must be below the witness Lease's margin ({margin} ms): otherwise two sides of a tie could rely on two holders"
    )]
    WitnessMargin {
        /// D + W in ms.
        sum: u128,
        /// lease_duration − renew_deadline in ms.
        margin: u128,
    },
}

impl Timing {
    /// The defaults: heartbeats every 100 ms, W = 300 ms, D = 700 ms, H = 3 s.
    pub const DEFAULT: Timing = Timing {
        interval: Duration::from_millis(100),
        withdraw_after: Duration::from_millis(300),
        dead_after: Duration::from_millis(700),
        hold_down: Duration::from_secs(3),
    };

    /// The clock-rate allowance added to `2W`: `D/500` (2000 ppm, four times what NTP slews).
    fn drift(&self) -> Duration {
        self.dead_after / 500
    }

    /// Checks every relation the fencing argument needs. `witness_margin` is the witness
    /// Lease's `lease_duration − renew_deadline` when a witness is configured.
    pub fn check(&self, witness_margin: Option<Duration>) -> Result<(), TimingError> {
        if self.interval.is_zero() {
            return Err(TimingError::ZeroInterval);
        }
        for (name, d) in [
            ("--heartbeat-ms", self.interval),
            ("--withdraw-after-ms", self.withdraw_after),
            ("--dead-after-ms", self.dead_after),
            ("--hold-down-ms", self.hold_down),
        ] {
            if d > MAX_TIMING {
                return Err(TimingError::TooLong(name));
            }
        }
        if self.withdraw_after <= self.interval * 2 {
            return Err(TimingError::WithdrawTooShort {
                w: self.withdraw_after.as_millis(),
                i: self.interval.as_millis(),
            });
        }
        let min_dead = self.withdraw_after * 2 + self.drift();
        if self.dead_after < min_dead {
            return Err(TimingError::DeadTooSoon {
                d: self.dead_after.as_millis(),
                w: self.withdraw_after.as_millis(),
                min: min_dead.as_millis()
                    + u128::from(!min_dead.subsec_nanos().is_multiple_of(1_000_000)),
            });
        }
        if self.hold_down < self.dead_after * 2 {
            return Err(TimingError::HoldDownTooShort {
                h: self.hold_down.as_millis(),
                d: self.dead_after.as_millis(),
            });
        }
        if let Some(margin) = witness_margin {
            let sum = self.dead_after + self.withdraw_after;
            if sum >= margin {
                return Err(TimingError::WitnessMargin {
                    sum: sum.as_millis(),
                    margin: margin.as_millis(),
                });
            }
        }
        Ok(())
    }

    /// `G`: the longest closure of the gate that does not end a period (`D − 2W − D/500`).
    pub fn grace(&self) -> Duration {
        self.dead_after
            .saturating_sub(self.withdraw_after * 2)
            .saturating_sub(self.drift())
    }
}

/// A strict majority of the known speakers.
pub fn has_quorum(known: usize, heard: usize) -> bool {
    known > 0 && heard * 2 > known
}

/// Exactly half the known speakers: neither side of an even split is a majority.
pub fn is_tie(known: usize, heard: usize) -> bool {
    known > 0 && heard * 2 == known
}

/// Far enough to mean "no end" (a single-node cluster's gate never closes).
fn far_after(now: Instant) -> Instant {
    now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600))
        .or_else(|| now.checked_add(MAX_TIMING))
        .unwrap_or(now)
}

/// What the gate is judged from, gathered by the heartbeat edge.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    /// This speaker.
    pub me: &'a NodeName,
    /// *K*: the speakers that count.
    pub known: &'a BTreeSet<NodeName>,
    /// Per peer heard directly, the contact time (`Membership::contacts`).
    pub contacts: &'a [(NodeName, Instant)],
    /// The membership key is loaded: without it nothing is heard or sent.
    pub keyed: bool,
    /// The witness holder this speaker may rely on, and until when.
    pub witness: Option<(&'a NodeName, Instant)>,
}

/// The instant the gate closes if nothing more is heard (`None`: closed now or never open),
/// judged at `now` with the withdraw window `window`. Pure.
pub fn open_until(evidence: &Evidence<'_>, window: Duration, now: Instant) -> Option<Instant> {
    let known = evidence.known;
    if !evidence.keyed || !known.contains(evidence.me) {
        return None;
    }
    let n = known.len();
    // Contact times of the peers that count, newest first.
    let mut contacts: Vec<(&NodeName, Instant)> = evidence
        .contacts
        .iter()
        .filter(|(p, _)| p != evidence.me && known.contains(p))
        .map(|(p, c)| (p, *c))
        .collect();
    contacts.sort_by_key(|c| std::cmp::Reverse(c.1));
    // The gate holds while the k-th newest contact is younger than the window.
    let kth = |list: &[(&NodeName, Instant)], k: usize| -> Option<Instant> {
        if k == 0 {
            Some(far_after(now))
        } else {
            list.get(k - 1).map(|(_, c)| *c + window)
        }
    };
    let majority = kth(&contacts, n / 2);
    let tie = n
        .is_multiple_of(2)
        .then_some(evidence.witness)
        .flatten()
        .filter(|(holder, _)| known.contains(*holder))
        .and_then(|(holder, relied_until)| {
            let half = n / 2;
            if holder == evidence.me {
                kth(&contacts, half - 1).map(|u| u.min(relied_until))
            } else {
                let holder_contact = contacts.iter().find(|(p, _)| *p == holder)?.1 + window;
                let others: Vec<(&NodeName, Instant)> = contacts
                    .iter()
                    .filter(|(p, _)| *p != holder)
                    .copied()
                    .collect();
                let rest = kth(&others, half.saturating_sub(2))?;
                Some(holder_contact.min(rest).min(relied_until))
            }
        });
    majority.max(tie).filter(|u| *u > now)
}

/// The speakers in two-way contact at `now` that count (this one included).
pub fn two_way_set(evidence: &Evidence<'_>, window: Duration, now: Instant) -> BTreeSet<NodeName> {
    evidence
        .contacts
        .iter()
        .filter(|(p, c)| evidence.known.contains(p) && now.saturating_duration_since(*c) < window)
        .map(|(p, _)| p.clone())
        .chain(
            evidence
                .known
                .contains(evidence.me)
                .then(|| evidence.me.clone()),
        )
        .collect()
}

/// The verdict and the facts behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The gate: answers may be sent until this instant (`None`: not now).
    pub open_until: Option<Instant>,
    /// The period is alive (the gate is open, or closed for less than the grace): the node
    /// keeps what it owns and says `may_announce` in its heartbeats.
    pub period_alive: bool,
    /// The current period's number.
    pub period: u32,
    /// When the current period started (while none is alive: now).
    pub member_since: Instant,
    /// Exactly half the counted speakers are in two-way contact: the witness is contended.
    pub tie: bool,
    /// Speakers that count.
    pub known: usize,
    /// Of them, in two-way contact (this one included).
    pub heard: usize,
}

impl Verdict {
    /// What this node says about itself in a heartbeat at `now`: whether its period is alive,
    /// its number and age (rounded up: peers then time the hold-down from no later than the
    /// truth), and its usable `links` with their subnets.
    pub fn own_state(
        &self,
        links: Vec<crate::decide::subnets::Link>,
        leaving: bool,
        now: Instant,
    ) -> MemberState {
        MemberState {
            leaving,
            may_announce: self.period_alive && !leaving,
            period: self.period,
            member_for_ms: if self.period_alive {
                crate::decide::membership::millis_up(
                    now.saturating_duration_since(self.member_since),
                )
            } else {
                0
            },
            links,
            subnets_known: true,
        }
    }

    /// Whether answers may be sent at `now`.
    pub fn gate_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|u| now < u)
    }
}

/// The fence's memory between judgements: the period, since when, and when the gate closed.
#[derive(Clone, Debug)]
pub struct Fence {
    timing: Timing,
    period: u32,
    member_since: Instant,
    /// The gate's closing instant as last judged.
    open_until: Option<Instant>,
    /// The period is alive.
    alive: bool,
}

impl Fence {
    /// A fence with no period yet.
    pub fn new(timing: Timing, now: Instant) -> Fence {
        Fence {
            timing,
            period: 0,
            member_since: now,
            open_until: None,
            alive: false,
        }
    }

    /// The current verdict without new evidence (the gate as last judged).
    pub fn current(&self, now: Instant) -> Verdict {
        let alive = self.alive
            && match self.open_until {
                Some(u) if u > now => true,
                Some(u) => now.saturating_duration_since(u) < self.timing.grace(),
                None => false,
            };
        Verdict {
            open_until: self.open_until.filter(|u| *u > now),
            period_alive: alive,
            period: self.period,
            member_since: if alive { self.member_since } else { now },
            tie: false,
            known: 0,
            heard: 0,
        }
    }

    /// Judges the evidence at `now`: the gate, and whether the period goes on, ends or starts.
    pub fn judge(&mut self, evidence: Evidence<'_>, now: Instant) -> Verdict {
        let window = self.timing.withdraw_after;
        let until = open_until(&evidence, window, now);
        let heard = two_way_set(&evidence, window, now).len();
        // A tie is contended for before the gate closes: once a peer's echo is half a window
        // late. Taking the Lease is an API write, which on a loaded node can take longer than
        // the grace; asked only when the gate had already closed, it answered after the period
        // ended, and the survivor of a two-node split sat out a whole hold-down (3 s dark).
        let heard_soon = two_way_set(&evidence, window / 2, now).len();
        let known = evidence.known.len();
        // The gate closed at `open_until` (as judged last); a closure shorter than the grace
        // keeps the period, a longer one ends it.
        let still_alive = self.current(now).period_alive;
        match (until, still_alive) {
            (Some(_), true) => {}
            (Some(_), false) => {
                self.period = self.period.wrapping_add(1);
                self.member_since = now;
                self.alive = true;
            }
            (None, alive) => {
                self.alive = alive;
                if !alive {
                    self.member_since = now;
                }
            }
        }
        if until.is_some() || !self.alive {
            self.open_until = until;
        }
        Verdict {
            open_until: until,
            tie: evidence.keyed
                && evidence.known.contains(evidence.me)
                && (is_tie(known, heard) || is_tie(known, heard_soon)),
            known,
            heard,
            ..self.current(now)
        }
    }
}

/// The verdict as the ARP/NDP readers and the gratuitous sender see it: until when answers
/// may go out, and for which period. Written by the heartbeat task at every judgement, read
/// lock-free at the moment an answer is sent: one atomic word holds both, so a reader never
/// pairs one period's snapshot with another period's deadline.
#[derive(Debug)]
pub struct Gate {
    base: Instant,
    /// The closing instant in whole milliseconds after `base` (rounded down: it closes no
    /// later than judged) in the low 40 bits, the period's low 24 bits above; 0: closed.
    word: std::sync::atomic::AtomicU64,
}

const GATE_PERIOD_BITS: u32 = 24;
const GATE_TIME_BITS: u32 = 64 - GATE_PERIOD_BITS;

impl Gate {
    /// A closed gate; times are kept relative to `base` (the speaker's start).
    pub fn new(base: Instant) -> Gate {
        Gate {
            base,
            word: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn period_bits(period: u32) -> u64 {
        u64::from(period) & ((1 << GATE_PERIOD_BITS) - 1)
    }

    /// Publishes a verdict.
    pub fn publish(&self, verdict: &Verdict) {
        let word = match verdict.open_until {
            Some(until) => {
                let ms = until.saturating_duration_since(self.base).as_millis();
                let ms = u64::try_from(ms)
                    .unwrap_or(u64::MAX)
                    .min((1 << GATE_TIME_BITS) - 1);
                (Self::period_bits(verdict.period) << GATE_TIME_BITS) | ms
            }
            None => 0,
        };
        self.word.store(word, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether an answer computed in `period` may be sent at `now`.
    pub fn allows(&self, period: u32, now: Instant) -> bool {
        let word = self.word.load(std::sync::atomic::Ordering::SeqCst);
        let until_ms = word & ((1 << GATE_TIME_BITS) - 1);
        let now_ms =
            u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        word != 0 && word >> GATE_TIME_BITS == Self::period_bits(period) && now_ms < until_ms
    }
}

#[cfg(test)]
mod tests;

use super::*;
use proptest::prelude::*;

const W: Duration = Duration::from_millis(300);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn names(list: &[&str]) -> BTreeSet<NodeName> {
    list.iter().map(|n| NodeName::new(*n)).collect()
}

fn contacts(list: &[(&str, Instant)]) -> Vec<(NodeName, Instant)> {
    list.iter().map(|(n, t)| (NodeName::new(*n), *t)).collect()
}

fn evidence<'a>(
    me: &'a NodeName,
    known: &'a BTreeSet<NodeName>,
    contacts: &'a [(NodeName, Instant)],
    witness: Option<(&'a NodeName, Instant)>,
) -> Evidence<'a> {
    Evidence {
        me,
        known,
        contacts,
        keyed: true,
        witness,
    }
}

#[test]
fn quorum_and_tie_counts() {
    assert!(has_quorum(3, 2));
    assert!(!has_quorum(3, 1));
    assert!(!has_quorum(2, 1));
    assert!(has_quorum(2, 2));
    assert!(has_quorum(1, 1));
    assert!(!has_quorum(4, 2));
    assert!(!has_quorum(0, 1));
    assert!(is_tie(2, 1) && is_tie(4, 2) && !is_tie(3, 1) && !is_tie(0, 0));
}

#[test]
fn the_gate_holds_while_a_majority_echoed_us_within_the_window() {
    let t0 = Instant::now();
    let a = NodeName::new("a");
    let k = names(&["a", "b", "c"]);
    // b echoed a heartbeat sent at t0, c one sent at t0 + 50 ms: one peer is enough, the
    // newest one counts.
    let c = contacts(&[("b", t0), ("c", t0 + ms(50))]);
    let e = evidence(&a, &k, &c, None);
    assert_eq!(open_until(&e, W, t0 + ms(60)), Some(t0 + ms(50) + W));
    assert_eq!(open_until(&e, W, t0 + ms(50) + W), None);
    // Five nodes: the second newest contact decides.
    let k5 = names(&["a", "b", "c", "d", "e"]);
    let c5 = contacts(&[("b", t0), ("c", t0 + ms(50)), ("d", t0 + ms(20))]);
    assert_eq!(
        open_until(&evidence(&a, &k5, &c5, None), W, t0),
        Some(t0 + ms(20) + W)
    );
    // A peer that does not count (its Node deleted, its speaker never ran) is no help.
    let not_counted = contacts(&[("z", t0 + ms(50))]);
    assert_eq!(
        open_until(&evidence(&a, &k, &not_counted, None), W, t0),
        None
    );
    // Not counted ourselves, or without the key: never.
    let others = names(&["b", "c"]);
    assert_eq!(open_until(&evidence(&a, &others, &c, None), W, t0), None);
    let unkeyed = Evidence {
        keyed: false,
        ..evidence(&a, &k, &c, None)
    };
    assert_eq!(open_until(&unkeyed, W, t0), None);
    // Alone and the only one counted: always.
    let alone = names(&["a"]);
    assert!(
        open_until(&evidence(&a, &alone, &[], None), W, t0).is_some_and(|u| u > t0 + ms(1_000_000))
    );
}

#[test]
fn a_tie_is_broken_only_by_a_holder_in_two_way_contact_and_only_while_relied_on() {
    let t0 = Instant::now();
    let (a, b) = (NodeName::new("a"), NodeName::new("b"));
    let pair = names(&["a", "b"]);
    let until = t0 + ms(6000);
    // Two nodes, b silent: only a holder that is us opens the gate.
    assert_eq!(
        open_until(&evidence(&a, &pair, &[], Some((&a, until))), W, t0),
        Some(until)
    );
    assert_eq!(
        open_until(&evidence(&a, &pair, &[], Some((&b, until))), W, t0),
        None
    );
    assert_eq!(open_until(&evidence(&a, &pair, &[], None), W, t0), None);
    // Four nodes 2/2: with the holder b in two-way contact, until b's contact ages out.
    let four = names(&["a", "b", "c", "d"]);
    let c = contacts(&[("b", t0)]);
    assert_eq!(
        open_until(&evidence(&a, &four, &c, Some((&b, until))), W, t0),
        Some(t0 + W)
    );
    let c_holder = NodeName::new("c");
    assert_eq!(
        open_until(&evidence(&a, &four, &c, Some((&c_holder, until))), W, t0),
        None
    );
    // Three nodes: no tie exists, the witness does not matter.
    let three = names(&["a", "b", "c"]);
    assert_eq!(
        open_until(&evidence(&a, &three, &[], Some((&a, until))), W, t0),
        None
    );
}

fn fence() -> (Fence, Instant) {
    let t0 = Instant::now();
    (Fence::new(Timing::DEFAULT, t0), t0)
}

#[test]
fn a_short_closure_keeps_the_period_a_long_one_ends_it() {
    let (mut f, t0) = fence();
    let a = NodeName::new("a");
    let k = names(&["a", "b", "c"]);
    let grace = Timing::DEFAULT.grace();
    assert!(grace > ms(90) && grace < ms(100), "{grace:?}");
    let v = f.judge(evidence(&a, &k, &contacts(&[("b", t0)]), None), t0);
    assert!(v.gate_open(t0) && v.period_alive);
    assert_eq!((v.period, v.member_since), (1, t0));
    // The gate closes at t0 + W; judged again a little after, with a fresh contact: the same
    // period, the same age.
    let closed_at = t0 + W;
    let back = closed_at + grace - ms(1);
    let v = f.judge(evidence(&a, &k, &contacts(&[("b", back)]), None), back);
    assert_eq!((v.period, v.member_since), (1, t0));
    // Closed longer than the grace: the period ended; the next opening is a new one.
    let closed_at = back + W;
    let late = closed_at + grace;
    assert!(!f.current(late).period_alive);
    let v = f.judge(evidence(&a, &k, &contacts(&[]), None), late);
    assert!(!v.period_alive && !v.gate_open(late));
    assert_eq!(v.member_since, late);
    let again = late + ms(10);
    let v = f.judge(evidence(&a, &k, &contacts(&[("b", again)]), None), again);
    assert_eq!((v.period, v.member_since), (2, again));
}

#[test]
fn a_stall_ends_the_period_whatever_was_heard_before_it() {
    let (mut f, t0) = fence();
    let a = NodeName::new("a");
    let k = names(&["a", "b", "c"]);
    f.judge(evidence(&a, &k, &contacts(&[("b", t0)]), None), t0);
    // Paused for 2 s: nothing judged meanwhile. At the resume, the gate is closed before any
    // evidence is looked at (the readers check it), and stale echoes that sat in the socket
    // buffer cannot reopen it.
    let resumed = t0 + ms(2000);
    let v = f.current(resumed);
    assert!(!v.gate_open(resumed) && !v.period_alive);
    let v = f.judge(
        evidence(&a, &k, &contacts(&[("b", t0 + ms(50))]), None),
        resumed,
    );
    assert!(!v.gate_open(resumed));
    // A fresh echo: a new period, so a new hold-down.
    let fresh = resumed + ms(100);
    let v = f.judge(evidence(&a, &k, &contacts(&[("b", resumed)]), None), fresh);
    assert!(v.gate_open(fresh));
    assert_eq!((v.period, v.member_since), (2, fresh));
}

#[test]
fn a_tie_is_flagged_so_the_witness_is_asked_and_reopens_within_the_grace() {
    let (mut f, t0) = fence();
    let (a, b) = (NodeName::new("a"), NodeName::new("b"));
    let pair = names(&["a", "b"]);
    let v = f.judge(evidence(&a, &pair, &contacts(&[("b", t0)]), None), t0);
    assert!(v.gate_open(t0) && !v.tie);
    // b's echo half a window late: the gate is open, but the tie is flagged already, so the
    // witness is asked before the gate closes (its answer may take longer than the grace).
    let late = t0 + W / 2 + ms(1);
    let v = f.judge(evidence(&a, &pair, &contacts(&[("b", t0)]), None), late);
    assert!(v.gate_open(late) && v.tie && v.heard == 2);
    // b dies: at t0 + W the gate closes, a tie. The witness answers 50 ms later: same period.
    let tie_at = t0 + W;
    let v = f.judge(evidence(&a, &pair, &contacts(&[("b", t0)]), None), tie_at);
    assert!(v.tie && !v.gate_open(tie_at) && v.period_alive);
    let answered = tie_at + ms(50);
    let v = f.judge(
        evidence(
            &a,
            &pair,
            &contacts(&[("b", t0)]),
            Some((&a, answered + ms(6000))),
        ),
        answered,
    );
    assert!(v.tie && v.gate_open(answered));
    assert_eq!((v.period, v.member_since), (1, t0));
    let _ = b;
}

#[test]
fn timings_that_break_the_argument_are_refused() {
    let ok = Timing::DEFAULT;
    assert_eq!(ok.check(Some(ms(4000))), Ok(()));
    let with = |f: &dyn Fn(&mut Timing)| {
        let mut t = ok;
        f(&mut t);
        t.check(Some(ms(4000)))
    };
    assert_eq!(
        with(&|t| t.interval = ms(0)),
        Err(TimingError::ZeroInterval)
    );
    assert!(matches!(
        with(&|t| t.withdraw_after = ms(200)),
        Err(TimingError::WithdrawTooShort { .. })
    ));
    assert!(matches!(
        with(&|t| t.dead_after = ms(600)),
        Err(TimingError::DeadTooSoon { min: 602, .. })
    ));
    // The old defaults (withdraw 400 ms, dead 600 ms) are refused: a one-way cut could let
    // two nodes answer.
    assert!(matches!(
        with(&|t| {
            t.withdraw_after = ms(400);
            t.dead_after = ms(600);
        }),
        Err(TimingError::DeadTooSoon { .. })
    ));
    assert!(matches!(
        with(&|t| t.hold_down = ms(1000)),
        Err(TimingError::HoldDownTooShort { .. })
    ));
    assert!(matches!(
        with(&|t| t.hold_down = Duration::from_secs(7200)),
        Err(TimingError::TooLong("--hold-down-ms"))
    ));
    assert!(matches!(
        with(&|t| {
            t.dead_after = ms(3800);
            t.hold_down = ms(7600);
        }),
        Err(TimingError::WitnessMargin { .. })
    ));
    // Without a witness the margin does not apply.
    let slow = Timing {
        dead_after: ms(3500),
        hold_down: ms(7000),
        ..ok
    };
    assert_eq!(slow.check(None), Ok(()));
    assert!(ok.grace() > Duration::ZERO);
}

proptest! {
    /// Whatever contacts two nodes hold at one instant, if their two-way sets are disjoint
    /// they are never both open: two majorities intersect, a majority and a half too, and two
    /// halves share the one holder.
    #[test]
    fn two_disjoint_two_way_sets_are_never_both_open(
        n in 1usize..9,
        holder in proptest::option::of(0usize..9),
        heard in proptest::collection::vec(any::<bool>(), 18),
    ) {
        let t0 = Instant::now();
        let all: Vec<NodeName> = (0..n).map(|i| NodeName::new(format!("n{i}"))).collect();
        let known: BTreeSet<NodeName> = all.iter().cloned().collect();
        let witness = holder.filter(|h| *h < n).map(|h| (&all[h], t0 + ms(6000)));
        if n < 2 { return Ok(()); }
        // Node 0 and node 1 each hold contacts with any peers.
        let side = |who: usize, offset: usize| -> Vec<(NodeName, Instant)> {
            (0..n)
                .filter(|&p| p != who && heard[offset + p])
                .map(|p| (all[p].clone(), t0))
                .collect()
        };
        let c0 = side(0, 0);
        let c1 = side(1, 9);
        let s0 = two_way_set(&evidence(&all[0], &known, &c0, witness), W, t0);
        let s1 = two_way_set(&evidence(&all[1], &known, &c1, witness), W, t0);
        if s0.is_disjoint(&s1) {
            let o0 = open_until(&evidence(&all[0], &known, &c0, witness), W, t0).is_some();
            let o1 = open_until(&evidence(&all[1], &known, &c1, witness), W, t0).is_some();
            prop_assert!(!(o0 && o1));
        }
    }

    /// Over any sequence of judgements: the period number only grows, the membership age
    /// never runs ahead of the clock, and the period ends exactly when the gate stayed closed
    /// for the grace.
    #[test]
    fn periods_follow_the_gate(
        steps in proptest::collection::vec((0u64..400, any::<bool>()), 1..60),
    ) {
        let t0 = Instant::now();
        let a = NodeName::new("a");
        let k = names(&["a", "b", "c"]);
        let mut f = Fence::new(Timing::DEFAULT, t0);
        let grace = Timing::DEFAULT.grace();
        let mut now = t0;
        let mut last_contact: Option<Instant> = None;
        let mut previous = f.current(t0);
        for (step_ms, heard) in steps {
            now += ms(step_ms);
            if heard { last_contact = Some(now); }
            let c: Vec<(NodeName, Instant)> =
                last_contact.map(|t| (NodeName::new("b"), t)).into_iter().collect();
            let closed_since = last_contact.map(|t| t + W);
            let v = f.judge(evidence(&a, &k, &c, None), now);
            prop_assert!(v.period >= previous.period);
            prop_assert!(v.member_since <= now && v.member_since >= previous.member_since.min(now));
            prop_assert_eq!(v.gate_open(now), closed_since.is_some_and(|c| c > now));
            if v.period == previous.period && previous.period_alive && v.period_alive {
                prop_assert_eq!(v.member_since, previous.member_since);
            }
            if previous.period_alive && !v.period_alive {
                prop_assert!(closed_since.is_some_and(|c| now >= c + grace));
            }
            if v.period_alive && !v.gate_open(now) {
                prop_assert!(closed_since.is_some_and(|c| now < c + grace));
            }
            previous = v;
        }
    }
}

#[test]
fn the_gate_allows_only_its_period_and_only_until_its_deadline() {
    let t0 = Instant::now();
    let gate = Gate::new(t0);
    assert!(!gate.allows(0, t0));
    let verdict = Verdict {
        open_until: Some(t0 + ms(300)),
        period_alive: true,
        period: 7,
        member_since: t0,
        tie: false,
        known: 3,
        heard: 2,
    };
    gate.publish(&verdict);
    assert!(gate.allows(7, t0 + ms(299)));
    assert!(!gate.allows(7, t0 + ms(300)), "closed at the deadline");
    assert!(!gate.allows(6, t0), "a snapshot of an earlier period");
    // Periods wrap in the word; equality is what counts.
    gate.publish(&Verdict {
        period: 7 + (1 << 24),
        ..verdict
    });
    assert!(gate.allows(7 + (1 << 24), t0));
    gate.publish(&Verdict {
        open_until: None,
        ..verdict
    });
    assert!(!gate.allows(7, t0));
}

use super::*;
use crate::decide::subnets::Link;
use proptest::prelude::*;

const DEAD: Duration = Duration::from_millis(700);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn name(n: &str) -> NodeName {
    NodeName::new(n)
}

fn state(period: u32, member_for_ms: u64) -> MemberState {
    MemberState {
        leaving: false,
        may_announce: true,
        period,
        member_for_ms,
        links: vec![Link::named("eth0")],
        subnets_known: true,
    }
}

/// Delivers `hb` to `to` as the edge does: an authentic datagram that does not prove itself
/// fresh is still recorded, to be echoed back.
fn deliver(to: &mut Membership, hb: Heartbeat, at: Instant) -> Result<Change, Rejection> {
    let (node, incarnation, seq) = (NodeName::new(hb.node.clone()), hb.incarnation, hb.seq);
    let result = to.receive(hb, at);
    if result == Err(Rejection::Unproven) {
        to.heard_unproven(&node, incarnation, seq, at);
    }
    result
}

/// Two speakers that just started, proving themselves to each other.
fn pair(t0: Instant) -> (Membership, Membership) {
    let mut a = Membership::new(name("a"), 11, DEAD, t0);
    let mut b = Membership::new(name("b"), 22, DEAD, t0);
    // Neither has heard the other: each first heartbeat proves nothing, but is echoed back.
    let from_a = a.outgoing(state(1, 0), t0);
    let from_b = b.outgoing(state(1, 0), t0);
    assert_eq!(deliver(&mut a, from_b, t0), Err(Rejection::Unproven));
    assert_eq!(deliver(&mut b, from_a, t0), Err(Rejection::Unproven));
    // The next ones echo each other (among the echoes: fresh, but no contact yet)...
    let t1 = t0 + ms(100);
    let from_a = a.outgoing(state(1, 0), t1);
    let from_b = b.outgoing(state(1, 0), t1);
    assert_eq!(deliver(&mut a, from_b, t1), Ok(Change::Election));
    assert_eq!(deliver(&mut b, from_a, t1), Ok(Change::Election));
    assert_eq!(a.contacts().count(), 0);
    // ...and then report each other: two-way contact.
    let t2 = t0 + ms(200);
    let from_a = a.outgoing(state(1, 0), t2);
    let from_b = b.outgoing(state(1, 0), t2);
    deliver(&mut a, from_b, t2).unwrap();
    deliver(&mut b, from_a, t2).unwrap();
    assert_eq!(a.contacts().count(), 1);
    assert_eq!(b.contacts().count(), 1);
    (a, b)
}

/// Delivers one heartbeat each way, `b`'s first; returns b's heartbeat as sent.
fn exchange(a: &mut Membership, b: &mut Membership, at: Instant) -> Heartbeat {
    let from_b = b.outgoing(state(1, 0), at);
    let _ = deliver(a, from_b.clone(), at);
    let from_a = a.outgoing(state(1, 0), at);
    let _ = deliver(b, from_a, at);
    from_b
}

#[test]
fn only_a_datagram_echoing_a_recent_heartbeat_of_ours_is_accepted() {
    let t0 = Instant::now();
    let mut a = Membership::new(name("a"), 11, DEAD, t0);
    let mut b = Membership::new(name("b"), 22, DEAD, t0);
    let hb_a = a.outgoing(state(1, 0), t0);
    b.receive(hb_a.clone(), t0).unwrap_err();
    // b now echoes a: but b must have accepted a first. Deliver a's second heartbeat once b
    // echoes nothing of a: still refused (no echo of b in it).
    let mut from_b = b.outgoing(state(1, 0), t0);
    assert_eq!(a.receive(from_b.clone(), t0), Err(Rejection::Unproven));
    // An echo of a's real sequence in the wrong incarnation (a's previous run) is no proof.
    from_b.reports.push(Report {
        node: "a".into(),
        incarnation: 10,
        seq: hb_a.seq,
        received_ago_ms: 0,
        span_ms: 0,
        state: state(1, 0),
    });
    assert_eq!(a.receive(from_b.clone(), t0), Err(Rejection::Unproven));
    // The right incarnation and a sequence a sent: accepted.
    from_b.reports[0].incarnation = 11;
    assert_eq!(a.receive(from_b.clone(), t0), Ok(Change::Election));
    assert!(a.is_alive(&name("b"), t0));
    // A sequence a never sent, or sent longer ago than dead_after: refused.
    let mut forged = from_b.clone();
    forged.seq += 1;
    forged.reports[0].seq = 999;
    assert_eq!(a.receive(forged, t0), Err(Rejection::Unproven));
    let mut late = from_b;
    late.seq += 1;
    assert_eq!(a.receive(late, t0 + DEAD), Err(Rejection::Unproven));
}

#[test]
fn replays_are_stale_and_a_restart_in_any_incarnation_is_accepted() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let first = exchange(&mut a, &mut b, t0 + ms(300));
    let t = t0 + ms(400);
    let second = exchange(&mut a, &mut b, t);
    assert_eq!(a.known(&name("b")).map(|k| k.seq), Some(second.seq));
    // The same datagram again, or an older one: stale.
    assert_eq!(a.receive(second.clone(), t), Err(Rejection::Stale));
    assert_eq!(a.receive(first.clone(), t), Err(Rejection::Stale));
    // Replayed after dead_after: it no longer proves anything.
    assert_eq!(a.receive(first, t + DEAD), Err(Rejection::Unproven));
    // b restarts in a *lower* incarnation (say its wall clock stepped back): its first
    // heartbeat proves nothing, but a echoes it back at once, and each then accepts the other.
    let t = t + ms(100);
    let mut b2 = Membership::new(name("b"), 1, DEAD, t);
    let lonely = b2.outgoing(state(1, 0), t);
    assert_eq!(deliver(&mut a, lonely, t), Err(Rejection::Unproven));
    let from_a = a.outgoing(state(1, 0), t);
    assert!(deliver(&mut b2, from_a, t).is_ok());
    let t = t + ms(100);
    let from_b2 = b2.outgoing(state(1, 0), t);
    assert!(deliver(&mut a, from_b2, t).is_ok());
    let known = a.known(&name("b")).unwrap();
    assert_eq!((known.incarnation, known.seq), (1, 2));
}

#[test]
fn a_restarted_peer_is_accepted_in_any_incarnation_once_each_hears_the_other() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    for i in 3..8 {
        exchange(&mut a, &mut b, t0 + ms(100 * i));
    }
    assert_eq!(a.known(&name("b")).unwrap().incarnation, 22);
    // b restarts in incarnation 3 < 22: the old rule (incarnations only grow) refused it
    // until a restarted too. Here two exchanges suffice, and contact resumes on the third.
    let t = t0 + ms(900);
    let mut b = Membership::new(name("b"), 3, DEAD, t);
    for i in 0..3 {
        exchange(&mut a, &mut b, t + ms(100 * i));
    }
    let known = a.known(&name("b")).unwrap();
    assert_eq!(known.incarnation, 3);
    assert!(a.is_alive(&name("b"), t + ms(300)));
    let contact = a.contacts().next().unwrap().1;
    assert!(contact >= t, "contact with the new incarnation");
}

#[test]
fn no_single_signed_datagram_silences_a_peer() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let t = t0 + ms(300);
    exchange(&mut a, &mut b, t);
    // A validly signed heartbeat "from b" with the largest sequence (a compromised key, a
    // bug), echoing a's latest sequence: accepted.
    let t = t + ms(100);
    let from_a = a.outgoing(state(1, 0), t);
    deliver(&mut b, from_a, t).unwrap();
    let mut poison = b.outgoing(state(1, 0), t);
    poison.seq = u64::MAX;
    deliver(&mut a, poison, t).unwrap();
    assert_eq!(a.known(&name("b")).unwrap().seq, u64::MAX);
    // b's genuine heartbeats (lower sequences) echo newer sequences of a: accepted all the
    // same, where "sequences only grow" would refuse b until it restarts. (a's reports now
    // echo b's bogus sequence, which b never sent: for one round b only echoes a back.)
    for i in 1..=4 {
        exchange(&mut a, &mut b, t + ms(100 * i));
    }
    assert_eq!(a.known(&name("b")).unwrap().seq, b.seq());
    let t = t + ms(400);
    assert!(
        a.contacts()
            .any(|(_, c)| t.saturating_duration_since(c) < ms(150))
    );
    assert!(
        b.contacts()
            .any(|(_, c)| t.saturating_duration_since(c) < ms(150))
    );
}

#[test]
fn contact_is_the_send_time_of_the_newest_reported_sequence() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let sent = t0 + ms(300);
    let from_a = a.outgoing(state(1, 0), sent);
    deliver(&mut b, from_a, sent + ms(3)).unwrap();
    let from_b = b.outgoing(state(1, 0), sent + ms(50));
    deliver(&mut a, from_b, sent + ms(53)).unwrap();
    let contacts: Vec<(&NodeName, Instant)> = a.contacts().collect();
    assert_eq!(contacts, vec![(&name("b"), sent)]);
}

#[test]
fn one_way_loss_between_two_nodes_is_bridged_by_a_third() {
    // c never hears b (b -> c is lost), but a hears both and reports b to c, with b's links,
    // fence and period: c sees the same members and states as everyone else.
    let t0 = Instant::now();
    let names = ["a", "b", "c"];
    let mut nodes: Vec<Membership> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Membership::new(name(n), 100 + i as u64, DEAD, t0))
        .collect();
    let lost = |from: usize, to: usize| from == 1 && to == 2;
    for step in 0..10u64 {
        let now = t0 + ms(100 * step);
        let out: Vec<Heartbeat> = (0..3)
            .map(|i| {
                let mut s = state(1, 100 * step);
                s.links = vec![Link::named(format!("eth{i}"))];
                nodes[i].outgoing(s, now)
            })
            .collect();
        for (from, hb) in out.iter().enumerate() {
            for (to, node) in nodes.iter_mut().enumerate() {
                if from != to && !lost(from, to) {
                    let _ = deliver(node, hb.clone(), now + ms(1));
                }
            }
        }
    }
    let now = t0 + ms(950);
    let c = &nodes[2];
    assert!(c.is_alive(&name("b"), now), "c learns of b through a");
    let b_at_c = c.known(&name("b")).unwrap();
    assert_eq!(b_at_c.state.links, [Link::named("eth1")]);
    assert!(b_at_c.state.may_announce);
    // c is in two-way contact with a only; so is b (it hears c, but c never echoes b).
    let c_contacts: Vec<&NodeName> = c.contacts().map(|(n, _)| n).collect();
    assert_eq!(c_contacts, [&name("a")]);
    let b_contacts: Vec<&NodeName> = nodes[1].contacts().map(|(n, _)| n).collect();
    assert_eq!(b_contacts, [&name("a")]);
    assert!(
        nodes[1].is_alive(&name("c"), now),
        "b learns of c through a"
    );
}

#[test]
fn leaving_is_immediate_and_silence_kills() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let t = t0 + ms(300);
    exchange(&mut a, &mut b, t);
    let b_name = name("b");
    assert!(a.is_alive(&b_name, t + DEAD - ms(1)));
    assert!(!a.is_alive(&b_name, t + DEAD));
    assert_eq!(a.next_expiry(t), Some(t + DEAD));
    let from_a = a.outgoing(state(1, 0), t);
    deliver(&mut b, from_a, t).unwrap();
    let mut leaving = b.outgoing(state(1, 0), t);
    leaving.state.leaving = true;
    assert_eq!(deliver(&mut a, leaving, t), Ok(Change::Election));
    assert!(!a.is_alive(&b_name, t));
    assert_eq!(a.next_expiry(t), None);
}

#[test]
fn a_fence_closing_or_a_new_period_is_an_election_change() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let mut t = t0 + ms(300);
    let say = |a: &mut Membership, b: &mut Membership, s: MemberState, t: Instant| {
        let from_a = a.outgoing(state(1, 0), t);
        deliver(b, from_a, t).unwrap();
        let hb = b.outgoing(s, t);
        deliver(a, hb, t)
    };
    assert_eq!(say(&mut a, &mut b, state(1, 300), t), Ok(Change::Refreshed));
    t += ms(100);
    let fenced = MemberState {
        may_announce: false,
        member_for_ms: 0,
        ..state(1, 0)
    };
    assert_eq!(say(&mut a, &mut b, fenced, t), Ok(Change::Election));
    t += ms(100);
    assert_eq!(say(&mut a, &mut b, state(2, 0), t), Ok(Change::Election));
    assert!(a.known(&name("b")).unwrap().state.may_announce);
    t += ms(100);
    let mut relinked = state(2, 100);
    relinked.links = vec![Link::named("eth1")];
    assert_eq!(say(&mut a, &mut b, relinked, t), Ok(Change::Election));
}

/// A three-node cluster exchanging heartbeats with random delays and losses; every estimate
/// the table keeps is checked against the truth.
#[derive(Debug, Clone)]
struct Delivery {
    from: usize,
    to: usize,
    delay_ms: u64,
    lost: bool,
}

proptest! {
    #[test]
    fn estimates_are_conservative_whatever_the_delays(
        deliveries in proptest::collection::vec(
            (0usize..3, 0usize..3, 0u64..150, proptest::bool::weighted(0.2)),
            20..120,
        ),
        periods in proptest::collection::vec(0u64..3000, 3),
    ) {
        let t0 = Instant::now() + Duration::from_secs(10);
        let names = ["a", "b", "c"];
        let mut nodes: Vec<Membership> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Membership::new(name(n), 7 + i as u64, DEAD, t0 - Duration::from_secs(10)))
            .collect();
        // Each node's fence period started `periods[i]` ms before t0 (the truth).
        let since: Vec<Instant> = periods.iter().map(|p| t0 - ms(*p)).collect();
        // The moments each node's heartbeats were actually received by each other node.
        let mut truly_heard: BTreeMap<(usize, usize), Instant> = BTreeMap::new();
        let mut now = t0;
        let mut in_flight: Vec<(Instant, usize, usize, Heartbeat)> = Vec::new();
        for d in deliveries.iter().map(|&(from, to, delay_ms, lost)| Delivery { from, to, delay_ms, lost }) {
            now += ms(20);
            if d.from != d.to {
                let s = state(1, u64::try_from((now - since[d.from]).as_millis()).unwrap());
                let hb = nodes[d.from].outgoing(s, now);
                if !d.lost {
                    in_flight.push((now + ms(d.delay_ms), d.from, d.to, hb));
                }
            }
            in_flight.sort_by_key(|f| f.0);
            while in_flight.first().is_some_and(|f| f.0 <= now) {
                let (at, from, to, hb) = in_flight.remove(0);
                if deliver(&mut nodes[to], hb, at).is_ok() {
                    truly_heard.insert((from, to), at);
                }
            }
            // Check every node's view of every other node.
            for (viewer, table) in nodes.iter().enumerate() {
                for (about, who) in names.iter().enumerate() {
                    if about == viewer { continue; }
                    let Some(k) = table.known(&name(who)) else { continue };
                    // Someone (the viewer or a reporter) heard it no later than the estimate.
                    let latest_true = (0..3)
                        .filter_map(|h| truly_heard.get(&(about, h)).copied())
                        .max();
                    prop_assert!(latest_true.is_some());
                    prop_assert!(k.since <= since[about], "since estimate later than the truth");
                    // Never earlier than the viewer's own last receipt from it.
                    if let Some(own) = truly_heard.get(&(about, viewer)) {
                        prop_assert!(k.heard_at >= *own, "heard_at earlier than a real receipt");
                    }
                    // The estimate never claims a hearing later than the latest real one plus
                    // the time the report took to arrive (bounded by the longest delay here).
                    prop_assert!(k.heard_at <= latest_true.unwrap() + ms(150));
                }
            }
        }
    }
}

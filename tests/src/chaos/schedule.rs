//! The chaos run's fault schedule, pure: which faults, on which nodes, when and for how long,
//! drawn from a seeded generator so that a seed replays the same schedule; which faults may be
//! active at once; and, from when faults were really applied and healed, which of them left a
//! majority of the speakers working (the faults after which every IP must answer again
//! within a second).

use std::collections::BTreeSet;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

/// After a fault is healed, the time its node needs to be whole again: the speaker's hold-down
/// (3 s), the break-before-make handback (200 ms) and a margin. A fault's window — where gaps
/// are charged to it and where it counts as impairing its node — ends this long after its heal.
pub const SETTLE: Duration = Duration::from_secs(5);

/// The faults the run applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum FaultKind {
    /// SIGKILL of a node's speaker (the kubelet restarts it).
    SpeakerKill,
    /// SIGSTOP of a node's speaker, SIGCONT after the hold.
    SpeakerPause,
    /// A node's LAN link (eth0) down, then up.
    LinkDown,
    /// Membership traffic into a node dropped (it hears nobody).
    MembershipInto,
    /// Membership traffic out of a node dropped (nobody hears it).
    MembershipOutOf,
    /// Membership traffic from one node to another dropped (one direction between two nodes).
    MembershipBetween,
    /// Membership traffic in and out of a node dropped.
    MembershipBoth,
    /// kube-apiserver stopped (SIGSTOP), then continued.
    ApiPause,
    /// kube-apiserver stopped (SIGTERM), then started again.
    ApiRestart,
    /// SIGKILL of the controller replica holding the leader Lease.
    LeaderKill,
    /// The membership key replaced by a new one in its Secret.
    KeyRotation,
    /// A Node removed (kubelet stopped, speaker killed, Node deleted), then added back
    /// (kubelet started: the Node registers, the DaemonSet runs a speaker there).
    NodeRemoval,
}

impl FaultKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [FaultKind; 12] = [
        FaultKind::SpeakerKill,
        FaultKind::SpeakerPause,
        FaultKind::LinkDown,
        FaultKind::MembershipInto,
        FaultKind::MembershipOutOf,
        FaultKind::MembershipBetween,
        FaultKind::MembershipBoth,
        FaultKind::ApiPause,
        FaultKind::ApiRestart,
        FaultKind::LeaderKill,
        FaultKind::KeyRotation,
        FaultKind::NodeRemoval,
    ];

    /// The name on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::SpeakerKill => "speaker-kill",
            FaultKind::SpeakerPause => "speaker-pause",
            FaultKind::LinkDown => "link-down",
            FaultKind::MembershipInto => "membership-into",
            FaultKind::MembershipOutOf => "membership-out-of",
            FaultKind::MembershipBetween => "membership-between",
            FaultKind::MembershipBoth => "membership-both",
            FaultKind::ApiPause => "api-pause",
            FaultKind::ApiRestart => "api-restart",
            FaultKind::LeaderKill => "leader-kill",
            FaultKind::KeyRotation => "key-rotation",
            FaultKind::NodeRemoval => "node-removal",
        }
    }

    /// Whether it targets one node (or, for [`FaultKind::MembershipBetween`], a pair).
    pub fn on_a_node(self) -> bool {
        !matches!(
            self,
            FaultKind::ApiPause
                | FaultKind::ApiRestart
                | FaultKind::LeaderKill
                | FaultKind::KeyRotation
        )
    }

    /// The API server is unreachable while it lasts.
    fn is_api_outage(self) -> bool {
        matches!(self, FaultKind::ApiPause | FaultKind::ApiRestart)
    }

    /// Applying or healing it is a sequence of API requests (not merely helped by the API).
    fn drives_the_api(self) -> bool {
        matches!(
            self,
            FaultKind::LeaderKill | FaultKind::KeyRotation | FaultKind::NodeRemoval
        )
    }

    /// A speaker process starts anew: it loads the membership key the Secret holds then.
    fn restarts_a_speaker(self) -> bool {
        matches!(self, FaultKind::SpeakerKill | FaultKind::NodeRemoval)
    }

    /// How often it is drawn, relative to the others: a key rotation and a Node removal hold
    /// their place for a minute or more and keep other faults out meanwhile, so they are drawn
    /// a third as often.
    fn weight(self) -> u32 {
        match self {
            FaultKind::KeyRotation | FaultKind::NodeRemoval => 1,
            _ => 3,
        }
    }

    /// How long the fault is held before it is healed: drawn from this range. Pauses shorter
    /// and longer than the speaker's dead-after (700 ms); a key rotation "lasts" its rotation
    /// window (60 s) and a little more, so no second rotation starts within it.
    fn hold_range(self) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            FaultKind::SpeakerKill | FaultKind::LeaderKill => (ms(0), ms(0)),
            FaultKind::SpeakerPause => (ms(200), ms(3000)),
            FaultKind::LinkDown
            | FaultKind::MembershipInto
            | FaultKind::MembershipOutOf
            | FaultKind::MembershipBetween
            | FaultKind::MembershipBoth => (ms(1000), ms(8000)),
            FaultKind::ApiPause => (ms(1000), ms(10_000)),
            FaultKind::ApiRestart => (ms(0), ms(2000)),
            FaultKind::KeyRotation => (ms(65_000), ms(65_000)),
            FaultKind::NodeRemoval => (ms(5000), ms(15_000)),
        }
    }

    /// What the heal usually takes beyond the hold, for planning (the executor waits on the
    /// real times): a speaker restarted and ready, the API server up, a new leader, a Node
    /// registered and its speaker ready.
    fn heal_allowance(self) -> Duration {
        Duration::from_secs(match self {
            FaultKind::SpeakerKill => 8,
            FaultKind::ApiRestart => 15,
            FaultKind::LeaderKill => 20,
            FaultKind::NodeRemoval => 40,
            _ => 1,
        })
    }
}

/// What a fault acts on; node indexes are 0-based in the lab's node list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The cluster as a whole (the API server, the controller, the key).
    Cluster,
    /// One node.
    Node(usize),
    /// Membership traffic from one node to another.
    Pair { from: usize, to: usize },
}

impl Target {
    /// The nodes it touches.
    pub fn nodes(self) -> Vec<usize> {
        match self {
            Target::Cluster => Vec::new(),
            Target::Node(n) => vec![n],
            Target::Pair { from, to } => vec![from, to],
        }
    }
}

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedFault {
    /// Its place in the schedule.
    pub id: usize,
    pub kind: FaultKind,
    pub target: Target,
    /// When it is applied, from the start of the run.
    pub start: Duration,
    /// How long it is held before its heal begins.
    pub hold: Duration,
}

impl PlannedFault {
    /// The nodes whose speaker may be unable to take part while the fault lasts, counted
    /// conservatively: a one-way loss between two nodes counts its sending side (its peer
    /// still has two-way contact with every other node, but which side loses its majority
    /// when another fault joins depends on both).
    pub fn impaired(&self) -> Vec<usize> {
        match self.target {
            Target::Cluster => Vec::new(),
            Target::Node(n) => vec![n],
            Target::Pair { from, .. } => vec![from],
        }
    }

    /// How long it occupies its place in the plan: hold, heal and settle.
    pub fn planned_span(&self) -> Duration {
        self.hold + self.kind.heal_allowance() + SETTLE
    }
}

/// Whether two faults may be active at once. Never: two faults on one node (their heals would
/// undo each other: a link brought up under a removed Node, a SIGCONT to a killed speaker); a
/// Node removal with any other node fault (the cluster is a two-node cluster meanwhile, whose
/// ties the witness Lease breaks — one fault at a time is what it promises); an API outage
/// with a fault driven through the API, or with another outage; a key rotation with a speaker
/// restart (a speaker started during the rotation window knows only the new key while its
/// peers still sign with the old one: it stays out of the membership for half the window,
/// longer than the fault that restarted it); two cluster faults of one kind.
pub fn may_overlap(a: &PlannedFault, b: &PlannedFault) -> bool {
    let (ka, kb) = (a.kind, b.kind);
    if ka == kb && !ka.on_a_node() {
        return false;
    }
    let nodes_a = a.target.nodes();
    if b.target.nodes().iter().any(|n| nodes_a.contains(n)) {
        return false;
    }
    let either = |f: &dyn Fn(FaultKind, FaultKind) -> bool| f(ka, kb) || f(kb, ka);
    if either(&|x, y| x == FaultKind::NodeRemoval && y.on_a_node()) {
        return false;
    }
    if either(&|x, y| x.is_api_outage() && (y.is_api_outage() || y.drives_the_api())) {
        return false;
    }
    if either(&|x, y| x == FaultKind::KeyRotation && y.restarts_a_speaker()) {
        return false;
    }
    true
}

/// Whether `candidate` may start while `active` are: it overlaps none it must not, and at
/// least one node stays unimpaired (with every node impaired, nothing can be said about any
/// IP; the run never goes there).
pub fn admissible(active: &[&PlannedFault], candidate: &PlannedFault, nodes: usize) -> bool {
    if !active.iter().all(|a| may_overlap(a, candidate)) {
        return false;
    }
    let impaired: BTreeSet<usize> = active
        .iter()
        .flat_map(|a| a.impaired())
        .chain(candidate.impaired())
        .collect();
    impaired.len() < nodes
}

/// What the generator draws from.
#[derive(Clone, Debug)]
pub struct ScheduleSettings {
    pub seed: u64,
    /// Faults start before this.
    pub duration: Duration,
    /// The lab's node count.
    pub nodes: usize,
    /// The kinds to draw from.
    pub kinds: Vec<FaultKind>,
    /// Between two fault starts: drawn uniformly from this range.
    pub spacing: (Duration, Duration),
}

/// The faults of a run: starts strictly increasing, every fault admissible against those
/// planned to be active at its start. A drawn fault that does not fit where it is drawn starts
/// later, once enough of the active ones have ended (so a long fault is not drawn less often
/// for needing the cluster to itself); one that cannot fit at all (no target) is drawn again.
pub fn generate(settings: &ScheduleSettings) -> Vec<PlannedFault> {
    let mut rng = XorShiftRng::seed_from_u64(settings.seed);
    let mut plan: Vec<PlannedFault> = Vec::new();
    if settings.kinds.is_empty() || settings.nodes == 0 {
        return plan;
    }
    let (lo, hi) = settings.spacing;
    let mut at = Duration::ZERO;
    loop {
        at += draw(&mut rng, lo, hi.max(lo));
        let drawn = (0..8).find_map(|_| {
            let kind = draw_kind(&mut rng, &settings.kinds);
            let target = draw_target(&mut rng, kind, settings.nodes)?;
            let (lo, hi) = kind.hold_range();
            Some((kind, target, draw(&mut rng, lo, hi)))
        });
        let Some((kind, target, hold)) = drawn else {
            continue;
        };
        let mut fault = PlannedFault {
            id: plan.len(),
            kind,
            target,
            start: at,
            hold,
        };
        loop {
            let ends = |f: &PlannedFault| f.start + f.planned_span();
            let active: Vec<&PlannedFault> =
                plan.iter().filter(|f| ends(f) > fault.start).collect();
            if admissible(&active, &fault, settings.nodes) {
                break;
            }
            // The earliest end among the active: every turn drops at least one.
            fault.start = active.iter().map(|f| ends(f)).min().unwrap_or(fault.start);
        }
        if fault.start >= settings.duration {
            return plan;
        }
        at = fault.start;
        plan.push(fault);
    }
}

fn draw(rng: &mut XorShiftRng, lo: Duration, hi: Duration) -> Duration {
    let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
    Duration::from_millis(if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    })
}

fn draw_kind(rng: &mut XorShiftRng, kinds: &[FaultKind]) -> FaultKind {
    let total: u32 = kinds.iter().map(|k| k.weight()).sum();
    let mut pick = rng.random_range(0..total);
    for kind in kinds {
        if pick < kind.weight() {
            return *kind;
        }
        pick -= kind.weight();
    }
    kinds[kinds.len() - 1]
}

fn draw_target(rng: &mut XorShiftRng, kind: FaultKind, nodes: usize) -> Option<Target> {
    if !kind.on_a_node() {
        return Some(Target::Cluster);
    }
    let node = rng.random_range(0..nodes);
    if kind != FaultKind::MembershipBetween {
        return Some(Target::Node(node));
    }
    if nodes < 2 {
        return None;
    }
    let other = (node + rng.random_range(1..nodes)) % nodes;
    Some(Target::Pair {
        from: node,
        to: other,
    })
}

/// A fault as it happened: when it was applied, when its heal finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub fault: PlannedFault,
    /// From the start of the run.
    pub applied: Duration,
    /// When the heal finished (the node, API server or controller back).
    pub healed: Duration,
    /// Why applying or healing it failed, if it did.
    pub error: Option<String>,
}

impl Applied {
    /// The end of its window: healed and settled.
    pub fn settled(&self) -> Duration {
        self.healed + SETTLE
    }

    /// Whether its window and `other`'s intersect.
    pub fn overlaps(&self, other: &Applied) -> bool {
        self.applied < other.settled() && other.applied < self.settled()
    }
}

/// Whether a majority of the nodes was unimpaired throughout fault `i`'s window, counting every
/// fault whose window intersects it.
pub fn leaves_majority(applied: &[Applied], i: usize, nodes: usize) -> bool {
    let Some(this) = applied.get(i) else {
        return false;
    };
    let impaired: BTreeSet<usize> = applied
        .iter()
        .filter(|other| other.overlaps(this))
        .flat_map(|other| other.fault.impaired())
        .collect();
    nodes.saturating_sub(impaired.len()) > nodes / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fault(kind: FaultKind, target: Target) -> PlannedFault {
        PlannedFault {
            id: 0,
            kind,
            target,
            start: Duration::ZERO,
            hold: Duration::ZERO,
        }
    }

    fn settings(seed: u64, kinds: Vec<FaultKind>) -> ScheduleSettings {
        ScheduleSettings {
            seed,
            duration: Duration::from_secs(1800),
            nodes: 3,
            kinds,
            spacing: (Duration::from_secs(3), Duration::from_secs(15)),
        }
    }

    #[test]
    fn names_are_the_command_line_values() {
        use clap::ValueEnum;
        for kind in FaultKind::ALL {
            let value = kind.to_possible_value().expect("a value");
            assert_eq!(value.get_name(), kind.name());
        }
        assert_eq!(FaultKind::value_variants().len(), FaultKind::ALL.len());
    }

    #[test]
    fn which_faults_may_overlap() {
        use FaultKind::*;
        let on = |k, n| fault(k, Target::Node(n));
        let cluster = |k| fault(k, Target::Cluster);
        // Different nodes: yes; one node: never.
        assert!(may_overlap(&on(SpeakerKill, 0), &on(LinkDown, 1)));
        assert!(!may_overlap(&on(SpeakerKill, 0), &on(LinkDown, 0)));
        let pair = fault(MembershipBetween, Target::Pair { from: 1, to: 2 });
        assert!(!may_overlap(&pair, &on(SpeakerPause, 2)));
        assert!(may_overlap(&pair, &on(SpeakerPause, 0)));
        // A Node removal goes alone among node faults.
        assert!(!may_overlap(&on(NodeRemoval, 0), &on(SpeakerPause, 1)));
        assert!(!may_overlap(&on(NodeRemoval, 0), &cluster(ApiPause)));
        // API outages: not with each other, not with what the API drives.
        assert!(!may_overlap(&cluster(ApiPause), &cluster(ApiRestart)));
        assert!(!may_overlap(&cluster(ApiRestart), &cluster(LeaderKill)));
        assert!(!may_overlap(&cluster(KeyRotation), &cluster(ApiPause)));
        assert!(may_overlap(&cluster(ApiPause), &on(SpeakerKill, 1)));
        assert!(may_overlap(&cluster(ApiRestart), &on(MembershipBoth, 1)));
        // A rotation: not with a speaker restart; with other node faults, yes.
        assert!(!may_overlap(&cluster(KeyRotation), &on(SpeakerKill, 2)));
        assert!(may_overlap(&cluster(KeyRotation), &on(SpeakerPause, 2)));
        assert!(may_overlap(&cluster(KeyRotation), &cluster(LeaderKill)));
        // Two cluster faults of one kind: never.
        assert!(!may_overlap(&cluster(KeyRotation), &cluster(KeyRotation)));
        assert!(!may_overlap(&cluster(LeaderKill), &cluster(LeaderKill)));
    }

    #[test]
    fn one_node_always_stays_unimpaired() {
        use FaultKind::*;
        let a = fault(SpeakerKill, Target::Node(0));
        let b = fault(LinkDown, Target::Node(1));
        assert!(admissible(&[&a], &b, 3));
        assert!(!admissible(
            &[&a, &b],
            &fault(SpeakerPause, Target::Node(2)),
            3
        ));
        assert!(admissible(&[&a, &b], &fault(ApiPause, Target::Cluster), 3));
    }

    fn applied(kind: FaultKind, target: Target, from_s: u64, to_s: u64) -> Applied {
        Applied {
            fault: fault(kind, target),
            applied: Duration::from_secs(from_s),
            healed: Duration::from_secs(to_s),
            error: None,
        }
    }

    #[test]
    fn a_majority_is_left_while_at_most_one_of_three_nodes_is_impaired() {
        use FaultKind::*;
        let run = vec![
            applied(SpeakerKill, Target::Node(0), 10, 12),
            // Within the kill's window (12 + SETTLE): two impaired.
            applied(LinkDown, Target::Node(1), 15, 18),
            applied(ApiPause, Target::Cluster, 40, 45),
            applied(MembershipBetween, Target::Pair { from: 2, to: 0 }, 60, 62),
        ];
        assert!(!leaves_majority(&run, 0, 3));
        assert!(!leaves_majority(&run, 1, 3));
        assert!(leaves_majority(&run, 2, 3));
        assert!(leaves_majority(&run, 3, 3));
        assert!(!leaves_majority(&run, 9, 3));
        // The same pair alone in a two-node cluster: half is not a majority.
        assert!(!leaves_majority(&run[3..], 0, 2));
    }

    #[test]
    fn a_seed_replays_its_schedule_and_another_seed_differs() {
        let all = FaultKind::ALL.to_vec();
        let a = generate(&settings(7, all.clone()));
        assert_eq!(a, generate(&settings(7, all.clone())));
        assert_ne!(a, generate(&settings(8, all)));
        // 30 min at 3-15 s spacing: about 200 slots, most filled, every kind drawn.
        assert!(a.len() > 100, "{}", a.len());
        for kind in FaultKind::ALL {
            assert!(
                a.iter().any(|f| f.kind == kind),
                "{} never drawn",
                kind.name()
            );
        }
    }

    #[test]
    fn only_the_chosen_kinds_are_drawn() {
        let plan = generate(&settings(3, vec![FaultKind::SpeakerPause]));
        assert!(!plan.is_empty());
        assert!(plan.iter().all(|f| f.kind == FaultKind::SpeakerPause));
        assert!(generate(&settings(3, Vec::new())).is_empty());
    }

    proptest! {
        /// Whatever the seed and the kinds: starts increase within the run, holds are within
        /// their kind's range, targets are valid nodes, and every fault is admissible against
        /// those planned to be active when it starts.
        #[test]
        fn every_schedule_keeps_its_rules(
            seed in any::<u64>(),
            nodes in 2usize..6,
            kinds in proptest::sample::subsequence(FaultKind::ALL.to_vec(), 1..=FaultKind::ALL.len()),
        ) {
            let s = ScheduleSettings { nodes, ..settings(seed, kinds.clone()) };
            let plan = generate(&s);
            for (i, f) in plan.iter().enumerate() {
                prop_assert_eq!(f.id, i);
                prop_assert!(f.start < s.duration);
                prop_assert!(kinds.contains(&f.kind));
                let (lo, hi) = f.kind.hold_range();
                prop_assert!(f.hold >= lo && f.hold <= hi);
                prop_assert!(f.target.nodes().iter().all(|n| *n < nodes));
                if let Target::Pair { from, to } = f.target {
                    prop_assert_ne!(from, to);
                }
                let active: Vec<&PlannedFault> = plan[..i]
                    .iter()
                    .filter(|g| g.start + g.planned_span() > f.start)
                    .collect();
                prop_assert!(admissible(&active, f, nodes));
                if i > 0 {
                    prop_assert!(plan[i - 1].start < f.start);
                }
            }
        }
    }
}

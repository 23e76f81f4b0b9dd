//! The election, run whenever anything it reads changed: the watch caches, translated into
//! its inputs (`decide::inputs`) → the fence's verdict (`decide::fencing`, through the
//! heartbeat edge) → the hold-down from every member's reported age → the election over the
//! cluster (`decide::cluster_view`) → break before make (`decide::handover`) → the announcer's
//! new set of owned IPs, and from it metrics, multicast groups, the readers' snapshot and this
//! node's report of what it announces.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use crate::decide::cluster_view::{ClusterView, MembershipView, Ownership};
use crate::decide::election::NodeName;
use crate::decide::eligibility::{HoldDown, Liveness};
use crate::decide::inputs;
use crate::decide::membership::Membership;
use crate::decide::subnets::{Link, NodeLinks};
use crate::edge::heartbeats::MembershipState;

use super::Speaker;

/// The membership as the election sees it: who counts, who is alive, whose fence period is
/// alive, the hold-down from every member's reported period start, and each node's usable
/// links (this node's from its own scan, the others' as they report them).
struct Members<'a> {
    membership: &'a Membership,
    counted: &'a BTreeSet<NodeName>,
    hold: &'a HoldDown,
    my_links: &'a [Link],
    me: &'a NodeName,
    my_period_alive: bool,
    now: Instant,
}

impl MembershipView for Members<'_> {
    fn liveness(&self, node: &NodeName) -> Liveness {
        if !self.counted.contains(node) {
            return Liveness::Absent;
        }
        if node == self.me {
            return if self.my_period_alive {
                self.hold.liveness(node, self.now)
            } else {
                Liveness::Fenced
            };
        }
        if !self.membership.is_alive(node, self.now) {
            return Liveness::Absent;
        }
        match self.membership.known(node) {
            Some(k) if k.state.may_announce => self.hold.liveness(node, self.now),
            _ => Liveness::Fenced,
        }
    }

    fn usable_links(&self, node: &NodeName) -> Option<NodeLinks> {
        if node == self.me {
            Some(NodeLinks {
                links: self.my_links.to_vec(),
                subnets_known: true,
            })
        } else {
            self.membership.known(node).map(|k| NodeLinks {
                links: k.state.links.clone(),
                subnets_known: k.state.subnets_known,
            })
        }
    }
}

impl Speaker {
    /// Re-runs the elections and applies this node's share.
    pub(super) fn elect(&mut self) {
        let now = Instant::now();
        let nodes = inputs::nodes(&self.stores.nodes.state());
        // A copy (O(nodes)): the heartbeat task keeps receiving while the election runs.
        let (verdict, known, heard, membership, counted) = {
            let state = self.heartbeats.lock();
            let MembershipState {
                membership,
                fence,
                verdict,
                counted,
                ..
            } = &*state;
            (
                fence.current(now),
                verdict.known,
                verdict.heard,
                membership.clone(),
                counted.clone(),
            )
        };
        let me = &self.settings.node;
        // Every node's hold-down runs from the start of its fence period as it reports it
        // (the earliest moment it can have started), this node's from its own fence.
        let announcing: BTreeSet<NodeName> = membership
            .alive(now)
            .filter(|(n, k)| k.state.may_announce && counted.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        self.hold.set_members(
            announcing
                .iter()
                .filter_map(|n| Some((n.clone(), membership.known(n)?.since)))
                .chain(
                    (verdict.period_alive && counted.contains(me))
                        .then(|| (me.clone(), verdict.member_since)),
                ),
        );
        let quorum = verdict.period_alive;
        if quorum != self.had_quorum {
            tracing::info!(
                quorum,
                known,
                heard,
                period = verdict.period,
                "quorum changed"
            );
        }
        self.had_quorum = quorum;
        self.metrics
            .members
            .set(i64::try_from(membership.alive(now).count() + 1).unwrap_or(i64::MAX));
        self.elected_digest = membership.digest(now);

        let pools = inputs::pools(&self.stores.pools.state());
        let ads = inputs::advertisements(&self.stores.ads.state());
        let services = inputs::services(
            &self.stores.services.state(),
            &self.stores.slices.state(),
            &self.class,
        );
        let my_links = self.links.usable();
        let view = ClusterView {
            nodes: &nodes,
            pools: &pools,
            advertisements: &ads,
            services: &services,
            membership: &Members {
                membership: &membership,
                counted: &counted,
                hold: &self.hold,
                my_links: &my_links,
                me,
                my_period_alive: verdict.period_alive,
                now,
            },
        };
        let all: Vec<Ownership> = if quorum { view.elect() } else { Vec::new() };
        let owners: BTreeMap<IpAddr, Option<NodeName>> =
            all.iter().map(|o| (o.ip, o.owner.clone())).collect();
        let current: BTreeSet<IpAddr> = self.announcer.owned().copied().collect();
        // A previous owner that says its period ended answers nothing: its IPs are taken at
        // once; one still in its period may be answering, so a hand-over waits.
        let mut answering = announcing;
        answering.insert(me.clone());
        let admitted = self.handover.admit(me, &owners, &answering, &current, now);
        let elected: Vec<Ownership> = all
            .into_iter()
            .filter(|o| admitted.contains(&o.ip))
            .collect();
        let mine: BTreeMap<IpAddr, Vec<String>> = elected
            .iter()
            .map(|o| (o.ip, o.interfaces.clone()))
            .collect();
        let (gained, lost) = self.announcer.set_owned(mine, now);
        let ifaces = self.links.announcing();
        let announced_on: BTreeMap<IpAddr, Vec<String>> = elected
            .iter()
            .map(|o| (o.ip, self.announcer.announced_on(o.ip, &ifaces)))
            .collect();
        self.status.report_owned(&elected, &announced_on);
        for ip in &gained {
            tracing::info!(%ip, interfaces = ?announced_on.get(ip), "announcing");
            self.metrics.ips_gained.inc();
        }
        for (ip, on) in &announced_on {
            self.metrics.set_announced(*ip, on);
        }
        for ip in &lost {
            tracing::info!(%ip, "no longer announcing");
            self.metrics.ips_lost.inc();
            self.metrics.forget_ip(*ip);
        }
        self.period = verdict.period;
        self.links.sync_multicast(self.announcer.owned());
        self.links.publish(&self.announcer, self.period);
    }
}

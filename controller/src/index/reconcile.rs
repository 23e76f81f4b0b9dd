//! One Service's reconcile, by path: a Service gone or of another class is forgotten; one no
//! longer `type: LoadBalancer` gives its IPs back and has its status cleared; one whose request
//! cannot be understood keeps what it holds and is told why; one of ours keeps a still-valid
//! assignment (and is extended for dual-stack), or has an invalid one cleared and is allocated
//! anew — or waits, told why.

use std::net::IpAddr;

use herald_config::Family;
use herald_config::service::{ServiceInputError, ServiceKey, ServiceRequest};

use super::{
    Action, ControllerIndex, EventRecord, Ownership, Regarding, join_ips, order_by_family, reasons,
};
use crate::allocator::{AllocationError, ServiceContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::writer::{Announced, StatusWrite};

impl ControllerIndex {
    /// IPs became free: every pending Service may now get one.
    pub(super) fn freed(&mut self, freed: Vec<IpAddr>) {
        if !freed.is_empty() {
            self.dirty.extend(self.pending.iter().cloned());
        }
    }

    /// Decides one Service, pushing the writes and Events it needs.
    pub(super) fn reconcile_one(&mut self, key: &ServiceKey, actions: &mut Vec<Action>) {
        let Some(view) = self.services.get(key) else {
            self.forget(key);
            return;
        };
        match view.ownership {
            Ownership::Ours => {
                self.serve(key, actions);
                self.announce(key, actions);
            }
            Ownership::OtherClass => self.forget(key),
            Ownership::NotLoadBalancer => self.stop_serving(key, actions),
        }
    }

    /// Mirrors who announces the Service's (first) IP, as the speakers report it, into its
    /// `herald.dev/Announced` condition, with an `AnnouncerChanged` Event — once per change.
    fn announce(&mut self, key: &ServiceKey, actions: &mut Vec<Action>) {
        let Some(view) = self.services.get(key) else {
            return;
        };
        let Some(claim) = view.status_ips.first().and_then(|ip| self.announcer(*ip)) else {
            return;
        };
        let message = claim.message();
        let since = Time(claim.since.0);
        if view.announced.as_ref() == Some(&message)
            || view.announced_written.as_ref() == Some(&message)
        {
            return;
        }
        let write = StatusWrite {
            key: key.clone(),
            uid: view.uid.clone(),
            resource_version: view.resource_version.clone(),
            ips: None,
            announced: Some(Announced {
                message: message.clone(),
                since,
            }),
        };
        let node = claim.node.clone();
        actions.push(Action::WriteStatus(write));
        let mut event = self.event_record(key, false, reasons::ANNOUNCER_CHANGED, message.clone());
        event.node = Some(node);
        actions.push(Action::Event(event));
        if let Some(view) = self.services.get_mut(key) {
            view.announced_written = Some(message);
        }
    }

    /// Gone, or another controller's: its IPs go back to the pools; its status is not ours.
    fn forget(&mut self, key: &ServiceKey) {
        self.pending.remove(key);
        let freed = self.allocator.release(key);
        self.freed(freed);
    }

    /// No longer `type: LoadBalancer`: its IPs go back, and a status holding ours is cleared.
    fn stop_serving(&mut self, key: &ServiceKey, actions: &mut Vec<Action>) {
        self.pending.remove(key);
        let freed = self.allocator.release(key);
        let Some(view) = self.services.get(key) else {
            self.freed(freed);
            return;
        };
        let had_ours = !freed.is_empty()
            || view
                .status_ips
                .iter()
                .any(|ip| self.allocator.pool_of(*ip).is_some());
        if had_ours && !view.status_ips.is_empty() {
            self.write(key, Vec::new(), actions);
        }
        self.freed(freed);
    }

    /// A Service of ours: keep, extend, clear or allocate.
    fn serve(&mut self, key: &ServiceKey, actions: &mut Vec<Action>) {
        self.report_deprecated(key, actions);
        let Some(view) = self.services.get(key) else {
            return;
        };
        let request = match &view.request {
            Ok(r) => r.clone(),
            Err(e) => {
                let e = e.clone();
                self.refuse(key, &e, actions);
                return;
            }
        };
        let namespace_labels = self
            .namespaces
            .get(&key.namespace)
            .cloned()
            .unwrap_or_default();
        let service_labels = view.labels.clone();
        let status_ips = view.status_ips.clone();
        let adopt_error = view.adopt_error.clone();
        let ctx = ServiceContext {
            key,
            request: &request,
            namespace_labels: &namespace_labels,
            service_labels: &service_labels,
        };
        let held = self.allocator.ips_of(key).to_vec();
        if !held.is_empty() {
            if self.keep_held(ctx, held, actions) {
                return;
            }
        } else if !status_ips.is_empty() {
            // The status holds IPs we did not adopt (or someone else wrote): they are replaced.
            let why = adopt_error.unwrap_or_else(|| "not assigned by this controller".into());
            actions.push(self.event(
                key,
                true,
                reasons::CLEAR_ASSIGNMENT,
                format!("clearing IP [{}]: {why}", join_ips(&status_ips)),
            ));
            if let Some(v) = self.services.get_mut(key) {
                v.adopt_error = None;
            }
        }
        self.allocate(ctx, &status_ips, actions);
    }

    /// Tells the user, once, that a deprecated annotation prefix was read.
    fn report_deprecated(&mut self, key: &ServiceKey, actions: &mut Vec<Action>) {
        let Some(view) = self.services.get(key) else {
            return;
        };
        let deprecated = view
            .request
            .as_ref()
            .map(|r| r.deprecated_annotations.join(", "))
            .unwrap_or_default();
        if deprecated.is_empty() || view.deprecated_reported {
            return;
        }
        actions.push(self.event(
            key,
            true,
            reasons::DEPRECATED_ANNOTATION,
            format!("{deprecated}: the metallb.universe.tf/ prefix is deprecated; use herald.dev/ (or metallb.io/)"),
        ));
        if let Some(v) = self.services.get_mut(key) {
            v.deprecated_reported = true;
        }
    }

    /// A request that cannot be understood: keep whatever the Service holds, and tell the user
    /// what is wrong, once.
    fn refuse(&mut self, key: &ServiceKey, error: &ServiceInputError, actions: &mut Vec<Action>) {
        let held = self.allocator.ips_of(key).to_vec();
        if !held.is_empty() {
            self.write(key, held, actions);
        }
        self.problem(key, reasons::INVALID_REQUEST, error.to_string(), actions);
    }

    /// The Service holds IPs: keeps them if still valid (re-held with its current ports and
    /// sharing key, extended with the other family when one is free) and returns true; clears
    /// them otherwise and returns false.
    fn keep_held(
        &mut self,
        ctx: ServiceContext<'_>,
        held: Vec<IpAddr>,
        actions: &mut Vec<Action>,
    ) -> bool {
        let key = ctx.key;
        if let Err(e) = self.allocator.check(ctx, &held) {
            let freed = self.allocator.release(key);
            actions.push(self.event(
                key,
                true,
                reasons::CLEAR_ASSIGNMENT,
                format!("clearing IP [{}]: {e}", join_ips(&held)),
            ));
            self.freed(freed);
            return false;
        }
        self.pending.remove(key);
        self.allocator.assign(ctx, &held);
        let mut ips = held;
        if let Some(added) = self.allocator.extend(ctx) {
            ips.push(added);
            actions.push(self.event(
                key,
                false,
                reasons::IP_ALLOCATED,
                format!("Assigned IP [{}] (added {added})", join_ips(&ips)),
            ));
        }
        // PreferDualStack holding one family waits for the other like a pending Service: it is
        // retried whenever an IP is freed or a pool changes.
        self.wait_for_missing_family(key, ctx.request, &ips);
        let ips = order_by_family(&ips, &ctx.request.families);
        self.write(key, ips, actions);
        self.clear_problem(key);
        true
    }

    /// Pending while the request's families are not all held.
    fn wait_for_missing_family(
        &mut self,
        key: &ServiceKey,
        request: &ServiceRequest,
        ips: &[IpAddr],
    ) {
        let held_families: Vec<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
        if request.families.is_complete(&held_families) {
            self.pending.remove(key);
        } else {
            self.pending.insert(key.clone());
        }
    }

    /// Allocates anew; on failure the Service waits, its status cleared, told why once.
    fn allocate(
        &mut self,
        ctx: ServiceContext<'_>,
        status_ips: &[IpAddr],
        actions: &mut Vec<Action>,
    ) {
        let key = ctx.key;
        match self.allocator.allocate(ctx) {
            Ok(ips) => {
                self.wait_for_missing_family(key, ctx.request, &ips);
                let ips = order_by_family(&ips, &ctx.request.families);
                actions.push(self.event(
                    key,
                    false,
                    reasons::IP_ALLOCATED,
                    format!("Assigned IP [{}]", join_ips(&ips)),
                ));
                self.write(key, ips, actions);
                self.clear_problem(key);
            }
            Err(e) => {
                self.pending.insert(key.clone());
                if !status_ips.is_empty() {
                    self.write(key, Vec::new(), actions);
                }
                let label = e.metric_label();
                if self.problem(
                    key,
                    reasons::ALLOCATION_FAILED,
                    format!("Failed to allocate IP for {key}: {e}"),
                    actions,
                ) {
                    actions.push(Action::CountFailure(label));
                }
                if matches!(e, AllocationError::Exhausted { .. }) {
                    tracing::debug!(service = %key, "waiting for a free IP");
                }
            }
        }
    }

    pub(super) fn event(
        &self,
        key: &ServiceKey,
        warning: bool,
        reason: &'static str,
        message: String,
    ) -> Action {
        Action::Event(self.event_record(key, warning, reason, message))
    }

    fn event_record(
        &self,
        key: &ServiceKey,
        warning: bool,
        reason: &'static str,
        message: String,
    ) -> EventRecord {
        EventRecord {
            regarding: Regarding::Service {
                key: key.clone(),
                uid: self.services.get(key).and_then(|v| v.uid.clone()),
            },
            warning,
            reason,
            message,
            node: None,
        }
    }

    /// Emits a Warning once per distinct problem. Returns whether it was new.
    fn problem(
        &mut self,
        key: &ServiceKey,
        reason: &'static str,
        message: String,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(view) = self.services.get(key) else {
            return false;
        };
        if view.last_problem.as_ref() == Some(&(reason, message.clone())) {
            return false;
        }
        actions.push(self.event(key, true, reason, message.clone()));
        if let Some(view) = self.services.get_mut(key) {
            view.last_problem = Some((reason, message));
        }
        true
    }

    fn clear_problem(&mut self, key: &ServiceKey) {
        if let Some(view) = self.services.get_mut(key) {
            view.last_problem = None;
        }
    }

    fn write(&mut self, key: &ServiceKey, ips: Vec<IpAddr>, actions: &mut Vec<Action>) {
        let Some(view) = self.services.get_mut(key) else {
            return;
        };
        if view.written.as_ref() == Some(&ips) || (view.written.is_none() && view.status_ips == ips)
        {
            return;
        }
        view.written = Some(ips.clone());
        actions.push(Action::WriteStatus(StatusWrite {
            key: key.clone(),
            uid: view.uid.clone(),
            resource_version: view.resource_version.clone(),
            ips: Some(ips),
            announced: None,
        }));
    }
}

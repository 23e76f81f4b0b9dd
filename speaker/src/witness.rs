//! The witness Lease that breaks ties (DESIGN.md, self-fencing): when exactly half the known
//! speakers are heard, only the side that hears the Lease's holder announces. A two-node
//! cluster's survivor fails over through it; a 2/2 split of four nodes picks one side.
//!
//! The Lease is contended only during a tie: outside one this task makes no API request at all
//! (a holder gives it back once when the tie ends), so normal operation writes nothing. During a tie each speaker reads it every retry period and
//! takes it when it is free or expired (judged like client-go, on the local clock from when the
//! record last changed: `herald_config::lease`).
//!
//! How long a holder is relied on (safety): the holder itself for `renew_deadline` from the
//! start of its last successful write; another speaker for `renew_deadline` from when it saw the
//! record change. A contender takes an unchanged record only after `lease_duration` >
//! `renew_deadline` + `retry_period`, so by then nobody relies on the old holder any more.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_config::lease::{LeaseDecision, Observed, decide, held_by};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::election::NodeName;

/// Where the Lease is and how it is timed.
#[derive(Clone, Debug)]
pub struct WitnessSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace (the speaker's).
    pub namespace: String,
    /// This node.
    pub identity: NodeName,
    /// How long an unrenewed Lease stays another speaker's.
    pub lease_duration: Duration,
    /// How long a holder (or a speaker on its side) relies on one write.
    pub renew_deadline: Duration,
    /// Time between reads (and renewals) during a tie.
    pub retry_period: Duration,
}

impl WitnessSettings {
    /// The defaults for `name` in `namespace`: 10 s Lease, relied on for 6 s, read every 500 ms.
    pub fn new(name: String, namespace: String, identity: NodeName) -> WitnessSettings {
        WitnessSettings {
            name,
            namespace,
            identity,
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(6),
            retry_period: Duration::from_millis(500),
        }
    }
}

/// The holder this speaker may rely on, and until when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Holder {
    node: Option<(NodeName, Instant)>,
}

/// The witness: its view of the holder, and the flag that says whether it is contended.
pub struct Witness {
    settings: WitnessSettings,
    holder: Mutex<Holder>,
    contended: watch::Sender<bool>,
}

impl Witness {
    /// A witness nobody holds yet, not contended.
    pub fn new(settings: WitnessSettings) -> Arc<Witness> {
        Arc::new(Witness {
            settings,
            holder: Mutex::new(Holder::default()),
            contended: watch::Sender::new(false),
        })
    }

    fn holder_lock(&self) -> std::sync::MutexGuard<'_, Holder> {
        self.holder.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The holder this speaker may rely on at `now`.
    pub fn holder(&self, now: Instant) -> Option<NodeName> {
        self.holder_lock()
            .node
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(n, _)| n.clone())
    }

    /// Whether this speaker is in a tie (the task reads the Lease only then).
    pub fn set_contended(&self, tie: bool) {
        self.contended.send_if_modified(|c| {
            let changed = *c != tie;
            *c = tie;
            changed
        });
    }

    fn rely_on(&self, node: Option<NodeName>, until: Instant) {
        let mut holder = self.holder_lock();
        let next = Holder {
            node: node.map(|n| (n, until)),
        };
        if holder.node.as_ref().map(|(n, _)| n) != next.node.as_ref().map(|(n, _)| n) {
            tracing::info!(holder = ?next.node.as_ref().map(|(n, _)| n.as_str()), "witness Lease holder");
        }
        *holder = next;
    }

    /// One read (and, if free or ours, one write) of the Lease.
    async fn attempt(&self, api: &Api<Lease>, observed: &mut Observed) -> Result<(), kube::Error> {
        let started = Instant::now();
        let s = &self.settings;
        let current = api.get_opt(&s.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let unchanged_for = observed.unchanged_for(spec);
        match decide(spec, s.identity.as_str(), unchanged_for) {
            LeaseDecision::Wait => {
                let holder = spec
                    .and_then(|l| l.holder_identity.clone())
                    .filter(|h| !h.is_empty())
                    .map(NodeName::new);
                let seen = observed.since().unwrap_or(started);
                self.rely_on(holder, seen + s.renew_deadline);
                Ok(())
            }
            LeaseDecision::Take { transition } => {
                let record = held_by(s.identity.as_str(), s.lease_duration, spec, transition);
                let written = match current {
                    None => {
                        let lease = Lease {
                            metadata: ObjectMeta {
                                name: Some(s.name.clone()),
                                namespace: Some(s.namespace.clone()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(record),
                        };
                        api.create(&PostParams::default(), &lease).await.map(|_| ())
                    }
                    Some(mut lease) => {
                        lease.spec = Some(record);
                        // resourceVersion is kept: a concurrent taker makes this fail with 409.
                        api.replace(&s.name, &PostParams::default(), &lease)
                            .await
                            .map(|_| ())
                    }
                };
                match written {
                    Ok(()) => {
                        self.rely_on(Some(s.identity.clone()), started + s.renew_deadline);
                        Ok(())
                    }
                    // Someone else wrote first: read again next time.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        self.rely_on(None, started);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Reads and takes the Lease while contended; idle otherwise. Runs until aborted.
    pub async fn run(self: Arc<Self>, client: Client) {
        let api: Api<Lease> = Api::namespaced(client, &self.settings.namespace);
        let mut observed = Observed::default();
        let mut contended = self.contended.subscribe();
        loop {
            if !*contended.borrow_and_update() {
                // The tie is over: a holder gives the Lease back (one write), so the next tie
                // (the other node dying) is broken at once rather than after expiry. Otherwise
                // no API traffic at all.
                self.give_up(&api).await;
                if contended.changed().await.is_err() {
                    return;
                }
                continue;
            }
            if let Err(e) = self.attempt(&api, &mut observed).await {
                tracing::warn!(error = %e, lease = %self.settings.name, "witness Lease not read or written");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.retry_period) => {}
                _ = contended.changed() => {}
            }
        }
    }

    /// Gives the Lease up if this speaker holds it (no request otherwise).
    async fn give_up(&self, api: &Api<Lease>) {
        if self.holder(Instant::now()).as_ref() != Some(&self.settings.identity) {
            return;
        }
        // Stop relying on it first: from here on this speaker does not count as the holder.
        self.rely_on(None, Instant::now());
        let name = &self.settings.name;
        let me = self.settings.identity.as_str();
        let released = async {
            let mut lease = api.get_opt(name).await?.unwrap_or_default();
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(());
            };
            if spec.holder_identity.as_deref() != Some(me) {
                return Ok(());
            }
            spec.holder_identity = None;
            api.replace(name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        };
        match released.await {
            Ok(()) => tracing::info!("witness Lease released"),
            Err(e) => tracing::warn!(error = %e, "witness Lease not released; it expires"),
        }
    }

    /// On shutdown: gives the Lease up if this speaker holds it, so the other side of a tie
    /// takes over at once rather than after expiry. Bounded by `timeout`.
    pub async fn release(&self, client: Client, timeout: Duration) {
        let api: Api<Lease> = Api::namespaced(client, &self.settings.namespace);
        if tokio::time::timeout(timeout, self.give_up(&api))
            .await
            .is_err()
        {
            tracing::warn!("witness Lease not released in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_relied_on_only_until_its_deadline() {
        let w = Witness::new(WitnessSettings::new(
            "w".into(),
            "ns".into(),
            NodeName::new("a"),
        ));
        let now = Instant::now();
        assert_eq!(w.holder(now), None);
        w.rely_on(Some(NodeName::new("b")), now + Duration::from_secs(6));
        assert_eq!(w.holder(now), Some(NodeName::new("b")));
        assert_eq!(w.holder(now + Duration::from_secs(6)), None);
    }

    #[test]
    fn reliance_ends_before_a_contender_may_take_the_lease() {
        let s = WitnessSettings::new("w".into(), "ns".into(), NodeName::new("a"));
        assert!(s.renew_deadline + s.retry_period < s.lease_duration);
    }

    #[tokio::test]
    async fn contention_is_a_flag_that_changes_only_on_change() {
        let w = Witness::new(WitnessSettings::new(
            "w".into(),
            "ns".into(),
            NodeName::new("a"),
        ));
        let mut rx = w.contended.subscribe();
        w.set_contended(false);
        assert!(!rx.has_changed().unwrap_or(true));
        w.set_contended(true);
        assert!(rx.has_changed().unwrap_or(false));
        assert!(*rx.borrow_and_update());
    }
}

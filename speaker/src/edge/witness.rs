//! The witness Lease that breaks ties in the self-fencing rule (`crate::decide::fencing`): when
//! exactly half the known speakers are heard, only the side that hears the Lease's holder
//! announces. A two-node cluster's survivor fails over through it; a 2/2 split of four nodes
//! picks one side.
//!
//! The Lease is contended only during a tie, or when one is imminent (a peer's echo half a
//! withdraw window late): outside that this task makes no API request at all (a holder gives it
//! back once when the tie ends), so normal operation writes nothing. During
//! a tie each speaker reads it every retry period and takes it when it is free or expired
//! (judged like client-go, on the local clock from when the record last changed:
//! `herald_config::lease`, through `herald_support::lease_lock`).
//!
//! How long a holder is relied on (safety): the holder itself for `renew_deadline` from the
//! start of its last successful write; another speaker for `renew_deadline` from when it saw the
//! record change. A contender takes an unchanged record only after `lease_duration` >
//! `renew_deadline` + `retry_period`, so by then nobody relies on the old holder any more.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_support::lease_lock::{Attempt, LeaseLock};
use kube::Client;
use tokio::sync::watch;

use crate::decide::election::NodeName;

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
    /// Woken when the holder relied upon changes, so the fence is judged again at once (a tie
    /// closes the gate, and its grace is short).
    changed: tokio::sync::Notify,
}

impl Witness {
    /// A witness nobody holds yet, not contended.
    pub fn new(settings: WitnessSettings) -> Arc<Witness> {
        Arc::new(Witness {
            settings,
            holder: Mutex::new(Holder::default()),
            contended: watch::Sender::new(false),
            changed: tokio::sync::Notify::new(),
        })
    }

    fn holder_lock(&self) -> std::sync::MutexGuard<'_, Holder> {
        self.holder.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The holder this speaker may rely on at `now`.
    pub fn holder(&self, now: Instant) -> Option<NodeName> {
        self.holder_until(now).map(|(n, _)| n)
    }

    /// The holder this speaker may rely on at `now`, and until when.
    pub fn holder_until(&self, now: Instant) -> Option<(NodeName, Instant)> {
        self.holder_lock()
            .node
            .as_ref()
            .filter(|(_, until)| now < *until)
            .cloned()
    }

    /// Resolves when the holder relied upon changes (or is relied upon anew).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// `lease_duration − renew_deadline`: how long before a contender may take an unrenewed
    /// Lease the reliance on its holder has ended. The fence needs `dead_after +
    /// withdraw_after` below it (`crate::decide::fencing::Timing::check`).
    pub fn margin(&self) -> Duration {
        self.settings
            .lease_duration
            .saturating_sub(self.settings.renew_deadline)
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
        drop(holder);
        self.changed.notify_one();
    }

    fn lock(&self, client: Client) -> LeaseLock {
        let s = &self.settings;
        LeaseLock::new(
            client,
            &s.namespace,
            &s.name,
            s.identity.as_str(),
            s.lease_duration,
        )
    }

    /// One read (and, if free or ours, one write) of the Lease; relies on its holder until
    /// the renew deadline.
    async fn attempt(&self, lock: &mut LeaseLock) -> Result<(), kube::Error> {
        let started = Instant::now();
        let s = &self.settings;
        match lock.try_acquire_or_renew().await? {
            Attempt::HeldBy { holder, since } => {
                let seen = since.unwrap_or(started);
                self.rely_on(holder.map(NodeName::new), seen + s.renew_deadline);
            }
            Attempt::Acquired => self.rely_on(Some(s.identity.clone()), started + s.renew_deadline),
            // Someone else wrote first: read again next time.
            Attempt::Conflict => self.rely_on(None, started),
        }
        Ok(())
    }

    /// Reads and takes the Lease while contended; idle otherwise. Runs until aborted.
    pub async fn run(self: Arc<Self>, client: Client) {
        let mut lock = self.lock(client);
        let mut contended = self.contended.subscribe();
        loop {
            if !*contended.borrow_and_update() {
                // The tie is over: a holder gives the Lease back (one write), so the next tie
                // (the other node dying) is broken at once rather than after expiry. Otherwise
                // no API traffic at all.
                self.give_up(&lock).await;
                if contended.changed().await.is_err() {
                    return;
                }
                continue;
            }
            if let Err(e) = self.attempt(&mut lock).await {
                tracing::warn!(error = %e, lease = %self.settings.name, "witness Lease not read or written");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.retry_period) => {}
                _ = contended.changed() => {}
            }
        }
    }

    /// Gives the Lease up if this speaker holds it (no request otherwise).
    async fn give_up(&self, lock: &LeaseLock) {
        if self.holder(Instant::now()).as_ref() != Some(&self.settings.identity) {
            return;
        }
        // Stop relying on it first: from here on this speaker does not count as the holder.
        self.rely_on(None, Instant::now());
        match lock.release(false).await {
            Ok(_) => tracing::info!("witness Lease released"),
            Err(e) => tracing::warn!(error = %e, "witness Lease not released; it expires"),
        }
    }

    /// On shutdown: gives the Lease up if this speaker holds it, so the other side of a tie
    /// takes over at once rather than after expiry. Bounded by `timeout`.
    pub async fn release(&self, client: Client, timeout: Duration) {
        let lock = self.lock(client);
        if tokio::time::timeout(timeout, self.give_up(&lock))
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

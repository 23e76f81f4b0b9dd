//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder writes.
//!
//! The usual client-go scheme (acquire when the Lease is free or expired, renew before the
//! deadline, optimistic concurrency through `resourceVersion`), small enough to keep here rather
//! than depend on a crate pinned to another kube version. The decision is a pure function;
//! the loop around it does the I/O.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Timings of the election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down (must be < lease_duration).
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

/// What to do with the Lease as it is now.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// We hold it (or may take it): write it with us as holder.
    Take {
        /// Whether the holder changes (acquire rather than renew).
        transition: bool,
    },
    /// Someone else holds a live Lease.
    Wait,
}

/// Decides whether `identity` may hold the Lease, given how long this replica has seen its
/// record unchanged. Like client-go, expiry is judged on the local clock from when the record
/// last changed, never by comparing the holder's `renewTime` with our clock: replicas' clocks
/// may disagree.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, unchanged_for: Duration) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Take { transition: true };
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return LeaseDecision::Take { transition: false };
    }
    if holder.is_empty() {
        return LeaseDecision::Take { transition: true };
    }
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15));
    if unchanged_for >= duration {
        LeaseDecision::Take { transition: true }
    } else {
        LeaseDecision::Wait
    }
}

/// When this replica last saw the Lease record change.
#[derive(Default)]
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Option<Instant>,
}

impl Observed {
    fn unchanged_for(&mut self, spec: Option<&LeaseSpec>) -> Duration {
        let record = spec.map(|s| (s.holder_identity.clone(), s.renew_time.clone()));
        if record != self.record || self.since.is_none() {
            self.record = record;
            self.since = Some(Instant::now());
        }
        self.since.map(|t| t.elapsed()).unwrap_or_default()
    }
}

fn lease_spec(
    settings: &LeaseSettings,
    previous: Option<&LeaseSpec>,
    transition: bool,
) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.lease_duration.as_secs().max(1) as i32),
        acquire_time: if transition {
            Some(now.clone())
        } else {
            previous.and_then(|p| p.acquire_time.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(if transition && previous.is_some() {
            transitions + 1
        } else {
            transitions
        }),
        ..Default::default()
    }
}

/// One attempt: returns whether we hold the Lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&settings.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let unchanged_for = observed.unchanged_for(spec);
    let LeaseDecision::Take { transition } = decide(spec, &settings.identity, unchanged_for) else {
        return Ok(false);
    };
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(lease_spec(settings, None, true)),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Some(mut lease) => {
            lease.spec = Some(lease_spec(settings, lease.spec.as_ref(), transition));
            // resourceVersion is kept: a concurrent writer makes this fail with 409.
            api.replace(&settings.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up so another replica takes over at once rather than after expiry.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    if let Err(e) = api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        tracing::warn!(error = %e, "could not release the leader Lease");
    }
}

/// Runs the election until `shutdown` fires, publishing whether we lead on `leading`.
pub async fn run(
    client: Client,
    settings: LeaseSettings,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut last_renew: Option<Instant> = None;
    let mut observed = Observed::default();
    loop {
        match try_acquire_or_renew(&api, &settings, &mut observed).await {
            Ok(true) => last_renew = Some(Instant::now()),
            Ok(false) => last_renew = None,
            Err(e) => {
                tracing::warn!(error = %e, lease = %settings.name, "leader election attempt failed")
            }
        }
        let leader = last_renew.is_some_and(|t| t.elapsed() < settings.renew_deadline);
        leading.send_if_modified(|current| {
            if *current != leader {
                tracing::info!(leader, identity = %settings.identity, "leadership changed");
                *current = leader;
                true
            } else {
                false
            }
        });
        tokio::select! {
            _ = tokio::time::sleep(settings.retry_period) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        release(&api, &settings).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn spec(holder: Option<&str>, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let fresh = Duration::from_secs(1);
        let stale = Duration::from_secs(20);
        assert_eq!(
            decide(None, "a", fresh),
            LeaseDecision::Take { transition: true }
        );
        assert_eq!(
            decide(Some(&spec(Some("a"), 15)), "a", stale),
            LeaseDecision::Take { transition: false }
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), 15)), "a", fresh),
            LeaseDecision::Wait
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), 15)), "a", stale),
            LeaseDecision::Take { transition: true }
        );
        assert_eq!(
            decide(Some(&spec(None, 15)), "a", fresh),
            LeaseDecision::Take { transition: true }
        );
    }

    #[test]
    fn expiry_counts_from_when_the_record_last_changed() {
        let mut observed = Observed::default();
        let a = spec(Some("b"), 15);
        assert!(observed.unchanged_for(Some(&a)) < Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(20));
        assert!(observed.unchanged_for(Some(&a)) >= Duration::from_millis(20));
        let mut renewed = a.clone();
        renewed.renew_time = Some(MicroTime(Timestamp::now() + SignedDuration::from_secs(1)));
        assert!(observed.unchanged_for(Some(&renewed)) < Duration::from_millis(20));
    }
}

//! The pure part of a `coordination.k8s.io/v1` Lease lock, shared by the controller's leader
//! election and the speaker's witness Lease: whether this process may take the Lease, judged
//! like client-go on the local clock from when the record last changed, and the record it writes.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

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

/// When this process last saw the Lease record (holder, renewTime) change.
#[derive(Debug, Default)]
pub struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Option<Instant>,
}

impl Observed {
    /// How long the record has been as in `spec`, on this process's clock.
    pub fn unchanged_for(&mut self, spec: Option<&LeaseSpec>) -> Duration {
        let record = spec.map(|s| (s.holder_identity.clone(), s.renew_time.clone()));
        if record != self.record || self.since.is_none() {
            self.record = record;
            self.since = Some(Instant::now());
        }
        self.since.map(|t| t.elapsed()).unwrap_or_default()
    }
}

impl Observed {
    /// When the record was last seen to change.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }
}

/// The Lease record `identity` writes to hold it for `duration` (a renewal keeps the acquire
/// time; a transition counts one more transition).
pub fn held_by(
    identity: &str,
    duration: Duration,
    previous: Option<&LeaseSpec>,
    transition: bool,
) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)),
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

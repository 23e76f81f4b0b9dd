//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder writes, until its term ends.
//!
//! The usual client-go scheme (acquire when the Lease is free or expired, renew before the
//! deadline, optimistic concurrency through `resourceVersion`), small enough to keep here rather
//! than depend on a crate pinned to another kube version. The Lease itself is read and written
//! by `herald_support::lease_lock` (shared with the speaker's witness); this loop only times the
//! attempts and publishes until when this replica leads.
//!
//! Leadership is bounded in time, not a flag: a successful renewal makes this replica the
//! leader until `start of that attempt + renew deadline`, and nothing else extends it. An
//! attempt that fails, or hangs (each is abandoned after the API timeout), simply does not
//! extend it, so a leader cut off from the API server stops at its deadline even while a
//! request is stuck. Another replica takes the Lease only after seeing the record unchanged for
//! the whole lease duration, counted from no earlier than the write: the deadline comes first
//! by `lease duration − renew deadline`.

use std::time::Duration;

use herald_support::lease_lock::{Attempt, LeaseLock};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::within;

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

/// Why the election's timings cannot work. The messages name the command-line flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A duration is zero.
    #[error("--{flag} must be at least 1 second")]
    Zero {
        /// The flag.
        flag: &'static str,
    },
    /// A duration does not fit where it is written or counted.
    #[error(
        "--{flag} is {value:?}: at most {max:?} (it must fit the Lease's leaseDurationSeconds, an int32)"
    )]
    TooLong {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: Duration,
        /// The largest accepted.
        max: Duration,
    },
    /// Two durations in the wrong order.
    #[error("--{shorter} ({short:?}) must be less than --{longer} ({long:?}): {why}")]
    Order {
        /// The flag that must be shorter.
        shorter: &'static str,
        /// Its value.
        short: Duration,
        /// The flag that must be longer.
        longer: &'static str,
        /// Its value.
        long: Duration,
        /// What breaks otherwise.
        why: &'static str,
    },
}

/// The longest duration accepted: the Lease records its duration in an int32 of seconds.
pub const LONGEST: Duration = Duration::from_secs(i32::MAX as u64);

impl LeaseSettings {
    /// Checks that the timings can keep their promise (one leader at a time, a leader that
    /// renews in time), given that every API request is abandoned after `api_timeout`.
    pub fn validate(&self, api_timeout: Duration) -> Result<(), SettingsError> {
        for (flag, value) in [
            ("lease-duration-seconds", self.lease_duration),
            ("renew-deadline-seconds", self.renew_deadline),
            ("retry-period-seconds", self.retry_period),
            ("api-timeout-seconds", api_timeout),
        ] {
            if value.is_zero() {
                return Err(SettingsError::Zero { flag });
            }
            if value > LONGEST {
                return Err(SettingsError::TooLong {
                    flag,
                    value,
                    max: LONGEST,
                });
            }
        }
        let order = |shorter, short: Duration, longer, long: Duration, why| {
            if short < long {
                Ok(())
            } else {
                Err(SettingsError::Order {
                    shorter,
                    short,
                    longer,
                    long,
                    why,
                })
            }
        };
        order(
            "renew-deadline-seconds",
            self.renew_deadline,
            "lease-duration-seconds",
            self.lease_duration,
            "a leader that cannot renew must stop writing before another replica may take the Lease",
        )?;
        order(
            "retry-period-seconds",
            self.retry_period,
            "renew-deadline-seconds",
            self.renew_deadline,
            "the leader must get at least one more attempt to renew before its deadline",
        )?;
        order(
            "api-timeout-seconds",
            api_timeout,
            "renew-deadline-seconds",
            self.renew_deadline,
            "a renewal abandoned only after the deadline could never keep the leader leading",
        )
    }
}

/// Until when this replica may act as the leader, as the election last published it.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<Option<Instant>>);

impl Leadership {
    /// A leadership that follows `until`.
    pub fn new(until: watch::Receiver<Option<Instant>>) -> Leadership {
        Leadership(until)
    }

    /// The end of the current term, if this replica leads now.
    pub fn until(&self) -> Option<Instant> {
        let until = (*self.0.borrow())?;
        (Instant::now() < until).then_some(until)
    }

    /// Whether this replica leads now.
    pub fn leads(&self) -> bool {
        self.until().is_some()
    }

    /// How long a request started now may take and still end within the term (`None`: not
    /// leading, so nothing may be written).
    pub fn remaining(&self, limit: Duration) -> Option<Duration> {
        self.until()
            .map(|until| limit.min(until.saturating_duration_since(Instant::now())))
    }

    /// Waits until the election publishes something new.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            // The election has ended: nothing will change again.
            std::future::pending::<()>().await;
        }
    }
}

/// Runs the election until `shutdown` fires, publishing until when this replica leads on
/// `term` (`None`: it does not). Each attempt is abandoned after `api_timeout`.
pub async fn run(
    client: Client,
    settings: LeaseSettings,
    api_timeout: Duration,
    term: watch::Sender<Option<Instant>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut lock = LeaseLock::new(
        client,
        &settings.namespace,
        &settings.name,
        &settings.identity,
        settings.lease_duration,
    );
    loop {
        // Counted from before the request: the Lease was written no earlier than this.
        let attempt = Instant::now();
        let outcome = within(api_timeout, "leader Lease", lock.try_acquire_or_renew()).await;
        let until = match outcome {
            Ok(Attempt::Acquired) => Some(attempt + settings.renew_deadline),
            Ok(Attempt::HeldBy { .. } | Attempt::Conflict) => None,
            // Failed or hung: the term is not extended, and ends at its deadline by itself.
            Err(e) => {
                tracing::warn!(error = %e, lease = %settings.name, "leader election attempt failed");
                *term.borrow()
            }
        };
        term.send_if_modified(|current| {
            if *current == until {
                return false;
            }
            let leads = until.is_some_and(|u| u > Instant::now());
            if current.is_some() != until.is_some() {
                tracing::info!(leader = leads, identity = %settings.identity, "leadership changed");
            }
            *current = until;
            true
        });
        tokio::select! {
            _ = tokio::time::sleep(settings.retry_period) => {}
            _ = shutdown.changed() => break,
        }
    }
    let leading = term.borrow().is_some_and(|u| u > Instant::now());
    term.send_replace(None);
    if leading {
        // Shortened to a second as well, so a replica that read the record just before still
        // takes it over promptly.
        if let Err(e) = within(api_timeout, "release leader Lease", lock.release(true)).await {
            tracing::warn!(error = %e, "could not release the leader Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;
    use crate::fake_api::{self, answer, hang, status};

    fn settings(lease: u64, renew: u64, retry: u64) -> LeaseSettings {
        LeaseSettings {
            name: "herald-controller".into(),
            namespace: "herald-system".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn the_defaults_are_accepted() {
        assert_eq!(settings(15, 10, 2).validate(Duration::from_secs(5)), Ok(()));
    }

    #[test]
    fn timings_that_break_the_promise_are_refused_naming_the_flags() {
        let five = Duration::from_secs(5);
        let cases = [
            (
                settings(15, 15, 2),
                five,
                "--renew-deadline-seconds (15s) must be less than --lease-duration-seconds (15s)",
            ),
            (
                settings(15, 20, 2),
                five,
                "--renew-deadline-seconds (20s) must be less than --lease-duration-seconds",
            ),
            (
                settings(15, 10, 10),
                five,
                "--retry-period-seconds (10s) must be less than --renew-deadline-seconds",
            ),
            (
                settings(15, 10, 2),
                Duration::from_secs(10),
                "--api-timeout-seconds (10s) must be less than --renew-deadline-seconds",
            ),
            (
                settings(0, 10, 2),
                five,
                "--lease-duration-seconds must be at least 1 second",
            ),
            (
                settings(15, 10, 0),
                five,
                "--retry-period-seconds must be at least 1 second",
            ),
            (
                settings(15, 10, 2),
                Duration::ZERO,
                "--api-timeout-seconds must be at least 1 second",
            ),
            (
                settings(u64::MAX, 10, 2),
                five,
                "--lease-duration-seconds is 18446744073709551615s: at most 2147483647s",
            ),
        ];
        for (s, api_timeout, expected) in cases {
            let e = s.validate(api_timeout).expect_err(expected).to_string();
            assert!(
                e.starts_with(expected),
                "{e}\n does not start with\n{expected}"
            );
        }
    }

    /// A fake API server holding one Lease, which stops answering when `hung` is set.
    fn lease_server(hung: Arc<AtomicBool>) -> Client {
        let stored: Arc<Mutex<Option<serde_json::Value>>> = Arc::default();
        let version = Arc::new(AtomicU64::new(1));
        let (client, _) = fake_api::client(move |seen| {
            if hung.load(Ordering::SeqCst) {
                return hang();
            }
            let Ok(mut stored) = stored.lock() else {
                return answer(500, status(500, "poisoned"));
            };
            match (seen.method.as_str(), stored.clone()) {
                ("GET", Some(lease)) => answer(200, lease),
                ("GET", None) => answer(404, status(404, "NotFound")),
                (_, _) => {
                    let mut lease = seen.body.clone();
                    let rv = version.fetch_add(1, Ordering::SeqCst);
                    lease["metadata"]["resourceVersion"] = json!(rv.to_string());
                    *stored = Some(lease.clone());
                    answer(200, lease)
                }
            }
        });
        client
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_lease_request_counts_as_a_failed_renewal() {
        let hung = Arc::new(AtomicBool::new(false));
        let (term_tx, term) = watch::channel(None);
        let leadership = Leadership::new(term);
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let timings = LeaseSettings {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
            ..settings(4, 3, 1)
        };
        tokio::spawn(run(
            lease_server(hung.clone()),
            timings,
            Duration::from_secs(1),
            term_tx,
            shutdown,
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(leadership.leads(), "acquired and renewed");
        // The API server stops answering: every request from now on hangs.
        hung.store(true, Ordering::SeqCst);
        let cut = Instant::now();
        // The last renewal started before the cut; the term ends within the renew deadline of
        // it, although the election's request never returns an answer.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!leadership.leads(), "still leading 3 s after the cut");
        assert!(
            leadership.until().is_none() && cut.elapsed() < Duration::from_secs(4),
            "the term ended before another replica could take the 4 s Lease"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_ends_at_its_deadline_by_itself() {
        let (tx, rx) = watch::channel(None);
        let leadership = Leadership::new(rx);
        assert!(!leadership.leads());
        tx.send_replace(Some(Instant::now() + Duration::from_secs(3)));
        assert!(leadership.leads());
        assert_eq!(
            leadership.remaining(Duration::from_secs(5)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            leadership.remaining(Duration::from_secs(1)),
            Some(Duration::from_secs(1))
        );
        // Nobody publishes anything more (the election is stuck): the term still ends.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!leadership.leads());
        assert_eq!(leadership.remaining(Duration::from_secs(5)), None);
    }
}

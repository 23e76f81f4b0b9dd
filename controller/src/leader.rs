//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder writes.
//!
//! The usual client-go scheme (acquire when the Lease is free or expired, renew before the
//! deadline, optimistic concurrency through `resourceVersion`), small enough to keep here rather
//! than depend on a crate pinned to another kube version. The decision is a pure function
//! (`herald_config::lease`, shared with the speaker's witness); the loop here does the I/O.

use std::time::Duration;

use herald_config::lease::{LeaseDecision, Observed, decide, held_by};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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
                spec: Some(held_by(
                    &settings.identity,
                    settings.lease_duration,
                    None,
                    true,
                )),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Some(mut lease) => {
            lease.spec = Some(held_by(
                &settings.identity,
                settings.lease_duration,
                lease.spec.as_ref(),
                transition,
            ));
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
        // Counted from before the request: the Lease was written no earlier than this.
        let attempt = Instant::now();
        match try_acquire_or_renew(&api, &settings, &mut observed).await {
            Ok(true) => last_renew = Some(attempt),
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

//! A `coordination.k8s.io/v1` Lease lock: read the record, decide (the pure part,
//! `herald_config::lease`, judged like client-go on the local clock), write it with this
//! process as holder (create, or replace under the read `resourceVersion`, so a concurrent
//! writer makes one of the two fail with 409), and give it back. The controller's leader
//! election and the speaker's witness both hold their Lease through this.

use std::time::{Duration, Instant};

use herald_config::lease::{LeaseDecision, Observed, decide, held_by};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

/// What one attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This process wrote the record: it holds the Lease.
    Acquired,
    /// Another holder's live record (or none), unchanged on this process's clock since `since`.
    HeldBy {
        /// The holder named in the record, if any.
        holder: Option<String>,
        /// When this process last saw the record change.
        since: Option<Instant>,
    },
    /// Another writer won the race: read again next time.
    Conflict,
}

/// One Lease, held for one identity.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
    lease_duration: Duration,
    observed: Observed,
}

impl LeaseLock {
    /// The Lease `namespace/name`, held by `identity` for `lease_duration` per write.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration,
            observed: Observed::default(),
        }
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the Lease and, when it is free, expired or ours, writes it with this identity.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let unchanged_for = self.observed.unchanged_for(spec);
        let LeaseDecision::Take { transition } = decide(spec, &self.identity, unchanged_for) else {
            return Ok(Attempt::HeldBy {
                holder: spec
                    .and_then(|l| l.holder_identity.clone())
                    .filter(|h| !h.is_empty()),
                since: self.observed.since(),
            });
        };
        let record = held_by(&self.identity, self.lease_duration, spec, transition);
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(record),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Some(mut lease) => {
                lease.spec = Some(record);
                // resourceVersion is kept: a concurrent writer makes this fail with 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match written {
            Ok(()) => Ok(Attempt::Acquired),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if the record names this identity: clears the holder (and with
    /// `expire`, shortens the duration to a second), so another process takes it at once
    /// rather than after expiry. Returns whether a record was given up.
    pub async fn release(&self, expire: bool) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        if expire {
            spec.lease_duration_seconds = Some(1);
        }
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| true)
    }
}

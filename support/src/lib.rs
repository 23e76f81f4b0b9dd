//! What both Herald binaries (`herald-controller`, `herald-speaker`) need to run as a process
//! in a cluster, written once:
//!
//! - [`telemetry`]: logging (JSON or text, filtered by `RUST_LOG`).
//! - [`signals`]: SIGTERM and Ctrl-C as a shutdown flag.
//! - [`health`]: the `/metrics`, `/healthz` and `/readyz` server, and the readiness flag.
//! - [`lease_lock`]: a `coordination.k8s.io/v1` Lease taken, renewed and released, with the
//!   decision itself shared from `herald_config::lease`.

pub mod health;
pub mod lease_lock;
pub mod signals;
pub mod telemetry;

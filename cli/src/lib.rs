//! `herald`, the operator's command-line tool (also installed as the kubectl plugin
//! `kubectl-herald`):
//!
//! - `migrate`: MetalLB's configuration in, Herald's out, with everything that has no
//!   equivalent reported (`migrate.rs`, pure; `inputs.rs` reads the files);
//! - `status`: per IP, who announces it and since when; per pool, usage; per node, its
//!   speaker (`status.rs`);
//! - `check`: a cluster's pre-flight (`check.rs`).
//!
//! The decisions are pure functions over plain data; the API reads are in `cluster.rs`.

pub mod announcer;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod inputs;
pub mod metrics_text;
pub mod migrate;
pub mod status;
pub mod table;

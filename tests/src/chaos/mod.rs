//! The chaos run (`make chaos`, `herald-chaos`): for a set time, random faults from a seeded
//! schedule applied to the lab cluster while a client watches every VIP; then the invariants
//! checked over what it saw.
//!
//! - [`schedule`]: the faults, when, for how long, which may overlap, which leave a majority
//!   (pure);
//! - [`check`]: the invariants and the figures (pure);
//! - [`inject`]: applying and healing each fault in the lab;
//! - [`observe`]: what is recorded besides the client's watch — Service status, container
//!   restarts and panics in logs, speaker memory;
//! - [`run`]: the run itself, its results as JSON lines and Markdown.

pub mod check;
pub mod inject;
pub mod observe;
pub mod run;
pub mod schedule;

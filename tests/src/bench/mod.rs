//! What both benchmark binaries (`herald-bench`, `herald-speaker-bench`) share: one parser of
//! the Prometheus text the binaries serve, one Markdown table printer, the statistics the
//! tables report, and the `/proc` readings behind CPU and memory figures.

pub mod metrics;
pub mod procfs;
pub mod stats;
pub mod table;

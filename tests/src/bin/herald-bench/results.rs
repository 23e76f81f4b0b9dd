//! What each phase measured, typed: one [`BenchResult`] per line of the results file, written
//! by the phases and read back by the report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

/// A measured figure; `None` when it could not be measured (a process gone, a zero window).
pub(crate) type Figure = Option<f64>;

/// `x` rounded to `digits`, if it is a number.
pub(crate) fn fig(x: f64, digits: i32) -> Figure {
    x.is_finite().then(|| round(x, digits))
}

/// One result.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "phase", rename_all = "lowercase")]
pub(crate) enum BenchResult {
    /// An allocator or index micro-benchmark.
    Micro(Micro),
    /// The API server's limit for N status patches.
    Direct(DirectRun),
    /// A controller draining N pending Services.
    Drain(Box<DrainRun>),
    /// N Services created while the controller runs.
    Live(Box<LiveRun>),
}

/// A micro-benchmark over one pool.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub(crate) enum Micro {
    /// N Services allocated into an empty pool.
    Fill {
        pool: String,
        n: usize,
        iterations: usize,
        ns_per_alloc: Figure,
        ns_per_alloc_min: Figure,
        ns_per_alloc_first_tenth: Figure,
        ns_per_alloc_last_tenth: Figure,
    },
    /// N allocated, every other one released, N/2 allocated again.
    Fragmented {
        pool: String,
        n: usize,
        iterations: usize,
        ns_per_release: Figure,
        ns_per_alloc: Figure,
    },
    /// The index's whole decision path for N new Services.
    Index {
        pool: String,
        n: usize,
        iterations: usize,
        ns_per_service_apply: Figure,
        ns_per_service_activate: Figure,
    },
}

/// N API calls at a bounded concurrency.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Throughput {
    pub(crate) time_s: Figure,
    pub(crate) rate_per_s: Figure,
    pub(crate) retries: usize,
    /// Errors by kind.
    pub(crate) errors: BTreeMap<String, usize>,
}

/// CPU seconds spent in a window, by whom.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct CpuWindow {
    pub(crate) window_s: Figure,
    pub(crate) apiserver_cpu_s: Figure,
    pub(crate) etcd_cpu_s: Figure,
    pub(crate) bench_cpu_s: Figure,
    pub(crate) controller_cpu_s: Figure,
    pub(crate) machine_busy_cpu_s: Figure,
    /// What the rest of the machine used meanwhile: a noise indicator.
    pub(crate) other_cpu_s: Figure,
}

impl CpuWindow {
    /// Average cores used by other work on the machine during the window.
    pub(crate) fn other_cores(&self) -> Figure {
        match (self.other_cpu_s, self.window_s) {
            (Some(cpu), Some(t)) if t > 0.0 => Some(cpu / t),
            _ => None,
        }
    }
}

/// The direct patches: their throughput and CPU.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct DirectPatch {
    #[serde(flatten)]
    pub(crate) throughput: Throughput,
    pub(crate) window: CpuWindow,
}

/// The `direct` phase.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct DirectRun {
    pub(crate) n: usize,
    pub(crate) rep: usize,
    pub(crate) concurrency: usize,
    pub(crate) create: Throughput,
    pub(crate) direct: DirectPatch,
}

/// Warnings and errors in the controller's log.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct LogSummary {
    pub(crate) log_levels: BTreeMap<String, usize>,
    pub(crate) log_samples: Vec<String>,
    pub(crate) log: String,
}

/// What the controller process cost and did.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct ControllerCost {
    pub(crate) controller_cpu_s_at_last_status: Figure,
    pub(crate) controller_cpu_s_total: Figure,
    pub(crate) controller_vmhwm_kb: u64,
    pub(crate) controller_vmrss_kb_end: u64,
    pub(crate) status_writes_ok: u64,
    pub(crate) status_writes_error: u64,
    pub(crate) events_ok: u64,
    pub(crate) events_error: u64,
    pub(crate) pool_status_writes: u64,
    pub(crate) allocation_failures: u64,
    pub(crate) reconciles: u64,
    pub(crate) reconcile_time_s: Figure,
    pub(crate) controller_log: LogSummary,
}

/// The drain itself.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Drain {
    pub(crate) start_to_ready_s: Figure,
    pub(crate) start_to_leading_s: Figure,
    pub(crate) start_to_last_status_s: Figure,
    pub(crate) ready_to_last_status_s: Figure,
    pub(crate) rate_from_ready_per_s: Figure,
    pub(crate) rate_from_start_per_s: Figure,
    pub(crate) events_done_after_start_s: Figure,
    pub(crate) services_without_ip: usize,
    pub(crate) window: CpuWindow,
    #[serde(flatten)]
    pub(crate) cost: ControllerCost,
}

/// The `drain` phase, with the limit measured again on the same control plane.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct DrainRun {
    pub(crate) n: usize,
    pub(crate) rep: usize,
    pub(crate) pool: String,
    pub(crate) create: Throughput,
    pub(crate) drain: Drain,
    pub(crate) direct_after: DirectPatch,
}

/// The `live` phase.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct LiveRun {
    pub(crate) n: usize,
    pub(crate) pool: String,
    pub(crate) create: Throughput,
    pub(crate) first_create_to_last_status_s: Figure,
    pub(crate) last_create_to_last_status_s: Figure,
    pub(crate) rate_per_s: Figure,
    pub(crate) events_done_after_first_create_s: Figure,
    pub(crate) controller_cpu_s_in_window: Figure,
    pub(crate) services_without_ip: usize,
    pub(crate) window: CpuWindow,
    #[serde(flatten)]
    pub(crate) cost: ControllerCost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_through_their_json_lines() {
        let micro = BenchResult::Micro(Micro::Index {
            pool: "2001:db8:100::/120".into(),
            n: 250,
            iterations: 5,
            ns_per_service_apply: Some(1200.0),
            ns_per_service_activate: None,
        });
        let line = serde_json::to_string(&micro).unwrap();
        assert!(line.contains(r#""phase":"micro""#) && line.contains(r#""scenario":"index""#));
        let back: BenchResult = serde_json::from_str(&line).unwrap();
        assert!(matches!(
            back,
            BenchResult::Micro(Micro::Index {
                n: 250,
                ns_per_service_activate: None,
                ..
            })
        ));
    }
}

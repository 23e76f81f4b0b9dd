//! CPU of the lab's components, of the benchmark and of the whole machine over a window, so each
//! figure says how much went to other work on the machine.

use super::*;

/// PIDs of the lab's etcd and kube-apiserver, from `$HERALD_LAB_DIR/pids`.
pub(crate) fn lab_pids() -> Vec<(&'static str, u32)> {
    let Some(dir) = std::env::var_os("HERALD_LAB_DIR") else {
        return Vec::new();
    };
    ["kube-apiserver", "etcd"]
        .into_iter()
        .filter_map(|name| {
            let pid =
                std::fs::read_to_string(Path::new(&dir).join("pids").join(format!("{name}.pid")))
                    .ok()?;
            Some((name, pid.trim().parse().ok()?))
        })
        .collect()
}

/// Busy CPU seconds of the whole machine (all CPUs), from /proc/stat.
pub(crate) fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, t)| t)
        .sum();
    busy / procfs::clock_ticks()
}

/// CPU seconds of the lab's components, of this process and of the whole machine, to
/// attribute a window's CPU (and to see how much went to other work on the machine).
#[derive(Clone, Debug)]
pub(crate) struct CpuSample {
    pub(crate) at: Instant,
    pub(crate) apiserver: f64,
    pub(crate) etcd: f64,
    pub(crate) bench: f64,
    pub(crate) machine: f64,
}

pub(crate) fn sample_cpu() -> CpuSample {
    let mut s = CpuSample {
        at: Instant::now(),
        apiserver: 0.0,
        etcd: 0.0,
        bench: procfs::cpu_seconds(std::process::id()).unwrap_or(0.0),
        machine: machine_busy_seconds(),
    };
    for (name, pid) in lab_pids() {
        let cpu = procfs::cpu_seconds(pid).unwrap_or(0.0);
        match name {
            "kube-apiserver" => s.apiserver = cpu,
            _ => s.etcd = cpu,
        }
    }
    s
}

/// CPU over a window; `controller_s`: what the controller used in it. `other_cpu_s` is what
/// the rest of the machine used meanwhile (someone else's build, say): a noise indicator.
pub(crate) fn cpu_delta(a: &CpuSample, b: &CpuSample, controller_s: f64) -> CpuWindow {
    let (api, etcd, bench) = (
        b.apiserver - a.apiserver,
        b.etcd - a.etcd,
        b.bench - a.bench,
    );
    let machine = b.machine - a.machine;
    CpuWindow {
        window_s: Some(secs(b.at - a.at)),
        apiserver_cpu_s: fig(api, 2),
        etcd_cpu_s: fig(etcd, 2),
        bench_cpu_s: fig(bench, 2),
        controller_cpu_s: fig(controller_s, 2),
        machine_busy_cpu_s: fig(machine, 2),
        other_cpu_s: fig((machine - api - etcd - bench - controller_s).max(0.0), 2),
    }
}

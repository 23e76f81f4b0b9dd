//! `herald-chaos`: the fault-injection run (issue 8, section 5) in the lab cluster (`make
//! lab-up` as root). For `--duration` it applies random faults from the schedule `--seed`
//! draws — speaker SIGKILL and SIGSTOP/SIGCONT, link down/up, membership traffic lost one way
//! or both, the API server paused or restarted, the controller leader killed, the membership key
//! rotated, a Node removed and added back — while a client in the client namespace asks for
//! every VIP by ARP/NDP and opens a TCP connection to it every 10 ms (and tcpdump captures its
//! wire). Then it checks the invariants over the whole run (never two MACs for one IP within
//! 10 ms; every IP answered again within 1 s in the window of each fault that left a majority;
//! no IP moved in Service status; no panic; speaker memory flat), writes JSON lines to `--out`
//! and prints the report in Markdown. Exit status 1 when an invariant was broken.
//!
//! `make chaos` runs it for 30 minutes (`CHAOS_SEED`, `CHAOS_DURATION`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use herald_tests::chaos::check::Limits;
use herald_tests::chaos::run::{RunSettings, run};
use herald_tests::chaos::schedule::{FaultKind, ScheduleSettings, generate};

#[derive(Parser, Debug)]
#[command(about = "Random faults in the lab cluster, measured: the invariants of issue 8 §5")]
struct Args {
    /// The schedule's seed (default: a random one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long faults are applied: seconds, or with a unit (90s, 30m, 1h).
    #[arg(long, value_parser = duration, default_value = "30m")]
    duration: Duration,
    /// The fault kinds to draw from (comma-separated; default every kind).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// The JSON lines (default: bench/results/chaos-<seed>.jsonl).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Capture the client's wire with tcpdump into this file (a ring of 10 × 50 MB: FILE0..9).
    #[arg(long)]
    capture: Option<PathBuf>,
    /// IPv4 Services (one dual-stack Service more).
    #[arg(long, default_value_t = 3)]
    services: usize,
    /// Between two probes of a VIP (ARP/NDP and TCP), in ms.
    #[arg(long, default_value_t = 10)]
    probe_ms: u64,
    /// Between two planned fault starts: the shortest and the longest, in seconds.
    #[arg(long, default_value = "3", value_name = "S")]
    spacing_min_s: u64,
    #[arg(long, default_value = "15", value_name = "S")]
    spacing_max_s: u64,
    /// Print the schedule the seed draws (for a lab of --nodes nodes) and exit: no lab needed.
    #[arg(long)]
    plan_only: bool,
    /// The node count --plan-only plans for.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
}

/// `90`, `90s`, `30m`, `1h`.
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (90, 90s, 30m, 1h)"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("unknown unit in {text:?} (s, m, h)")),
    };
    n.checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    herald_tests::init_tracing();
    let args = Args::parse();
    if args.spacing_min_s == 0 || args.spacing_min_s > args.spacing_max_s {
        bail!("--spacing-min-s must be at least 1 and at most --spacing-max-s");
    }
    if args.probe_ms == 0 {
        bail!("--probe-ms must be at least 1");
    }
    let seed = args
        .seed
        .unwrap_or_else(|| u64::from(herald_tests::rand_u32()));
    let kinds = if args.faults.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench/results/chaos-{seed}.jsonl")));
    let command = format!(
        "herald-chaos --seed {seed} --duration {}s{}",
        args.duration.as_secs(),
        if args.faults.is_empty() {
            String::new()
        } else {
            format!(
                " --faults {}",
                kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
            )
        }
    );
    eprintln!("[chaos] {command}");
    let spacing = (
        Duration::from_secs(args.spacing_min_s),
        Duration::from_secs(args.spacing_max_s),
    );
    if args.plan_only {
        let plan = generate(&ScheduleSettings {
            seed,
            duration: args.duration,
            nodes: args.nodes,
            kinds,
            spacing,
        });
        for f in &plan {
            println!(
                "{:>4} {:>8.1}s {:<18} {:?} hold {:.1}s",
                f.id,
                f.start.as_secs_f64(),
                f.kind.name(),
                f.target,
                f.hold.as_secs_f64()
            );
        }
        return Ok(());
    }
    let outcome = run(RunSettings {
        seed,
        duration: args.duration,
        kinds,
        spacing,
        services: args.services,
        probe_every: Duration::from_millis(args.probe_ms),
        out: out.clone(),
        capture: args.capture,
        command,
        limits: Limits::default(),
    })
    .await
    .context("the chaos run")?;
    println!("{}", outcome.markdown);
    eprintln!("[chaos] results in {}", out.display());
    if !outcome.verdict.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_and_without_units() {
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(duration("5x").is_err());
        assert!(duration("m").is_err());
        assert!(duration("99999999999999999999h").is_err());
    }
}

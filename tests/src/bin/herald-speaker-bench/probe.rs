//! The failover client, run in the client namespace: HTTP requests on fresh connections around a
//! fault it triggers itself.

use super::*;
use serde::{Deserialize, Serialize};

#[derive(Args, Debug)]
pub(crate) struct ProbeOpts {
    /// The VIP and port to GET.
    #[arg(long)]
    pub(crate) target: SocketAddr,
    /// Between probes, in ms.
    #[arg(long = "interval-ms", value_name = "MS", value_parser = millis, default_value = "10")]
    pub(crate) interval: Duration,
    /// Probe timeout, in ms.
    #[arg(long = "timeout-ms", value_name = "MS", value_parser = millis, default_value = "80")]
    pub(crate) timeout: Duration,
    /// Probing before the fault, in ms.
    #[arg(long = "pre-ms", value_name = "MS", value_parser = millis, default_value = "500")]
    pub(crate) pre: Duration,
    /// Probing after the first answer from another node, in ms.
    #[arg(long = "after-ms", value_name = "MS", value_parser = millis, default_value = "1000")]
    pub(crate) after: Duration,
    /// Give up after this long, in ms.
    #[arg(long = "max-ms", value_name = "MS", value_parser = millis, default_value = "10000")]
    pub(crate) max: Duration,
    /// The node answering before the fault.
    #[arg(long, default_value = "")]
    pub(crate) old: String,
    /// The fault: a command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub(crate) fault: Vec<String>,
}

/// What the probe prints: its samples around the fault, on its own clock (µs since it started).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub(crate) struct ProbeReport {
    /// When the fault command started and ended.
    pub(crate) t0_us: u64,
    pub(crate) t1_us: u64,
    /// The fault command's exit status (-1: killed by a signal, -2: not started).
    pub(crate) fault_status: i32,
    pub(crate) samples: Vec<ProbeSample>,
}

/// One request: `[sent_us, done_us, node, error]` on the wire, one of the last two `null`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(from = "SampleTuple", into = "SampleTuple")]
pub(crate) struct ProbeSample {
    pub(crate) sent_us: u64,
    pub(crate) done_us: u64,
    /// The node that answered.
    pub(crate) node: Option<String>,
    pub(crate) error: Option<String>,
}

type SampleTuple = (u64, u64, Option<String>, Option<String>);

impl From<SampleTuple> for ProbeSample {
    fn from((sent_us, done_us, node, error): SampleTuple) -> ProbeSample {
        ProbeSample {
            sent_us,
            done_us,
            node,
            error,
        }
    }
}

impl From<ProbeSample> for SampleTuple {
    fn from(s: ProbeSample) -> SampleTuple {
        (s.sent_us, s.done_us, s.node, s.error)
    }
}

/// One HTTP GET on a fresh connection: the body (the node's name).
pub(crate) async fn get_node(addr: SocketAddr) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.trim().to_string())
}

pub(crate) async fn probe(o: ProbeOpts) -> anyhow::Result<()> {
    let origin = Instant::now();
    let us = move |t: Instant| t.duration_since(origin).as_micros() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64, Result<String, String>)>();
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        let (target, interval, timeout) = (o.target, o.interval, o.timeout);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let r = match tokio::time::timeout(timeout, get_node(target)).await {
                        Ok(r) => r,
                        Err(_) => Err("timeout".into()),
                    };
                    let _ = tx.send((us(sent), us(Instant::now()), r));
                });
            }
        })
    };
    let mut samples: Vec<(u64, u64, Result<String, String>)> = Vec::new();
    tokio::time::sleep(o.pre).await;
    let t0 = Instant::now();
    let status = tokio::process::Command::new(&o.fault[0])
        .args(&o.fault[1..])
        .status()
        .await;
    let t1 = Instant::now();
    let fault_status = status.map(|s| s.code().unwrap_or(-1)).unwrap_or(-2);
    let t0_us = us(t0);
    let mut first_other: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = samples.len();
        while let Ok(s) = rx.try_recv() {
            samples.push(s);
        }
        if first_other.is_none()
            && samples[before..]
                .iter()
                .any(|(_, done, r): &(u64, u64, Result<String, String>)| {
                    *done >= t0_us && r.as_ref().is_ok_and(|n| *n != o.old)
                })
        {
            first_other = Some(Instant::now());
        }
        let now = Instant::now();
        if first_other.is_some_and(|f| now - f >= o.after) || now - t0 >= o.max {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(o.timeout + Duration::from_millis(30)).await;
    ticker.abort();
    while let Ok(s) = rx.try_recv() {
        samples.push(s);
    }
    samples.sort_by_key(|s| s.0);
    let out = ProbeReport {
        t0_us,
        t1_us: us(t1),
        fault_status,
        samples: samples
            .into_iter()
            .map(|(sent_us, done_us, r)| {
                let (node, error) = match r {
                    Ok(node) => (Some(node), None),
                    Err(e) => (None, Some(e)),
                };
                ProbeSample {
                    sent_us,
                    done_us,
                    node,
                    error,
                }
            })
            .collect(),
    };
    let out = serde_json::to_string(&out)?;
    println!("{out}");
    Ok(())
}

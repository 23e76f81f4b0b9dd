//! The ARP phase: reply latency of the speaker against the kernel's own, under load from `arpload`
//! in the client namespace.

use super::*;

pub(crate) fn slot_mac(slot: usize) -> MacAddr {
    let [a, b, c, d] = ARP_MAC_PREFIX;
    MacAddr([a, b, c, d, (slot >> 8) as u8, slot as u8])
}

#[derive(Args, Debug)]
pub(crate) struct ArpOpts {
    /// The client's interface.
    #[arg(long = "if", default_value = "eth0")]
    pub(crate) iface: String,
    /// The VIP to ask for.
    #[arg(long)]
    pub(crate) vip: Ipv4Addr,
    /// A node's own address, answered by the kernel (the comparison).
    #[arg(long)]
    pub(crate) node_ip: Ipv4Addr,
    /// The sender address of the requests.
    #[arg(long, default_value_t = ARP_SENDER)]
    pub(crate) sender_ip: Ipv4Addr,
    /// Requests per second.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) rps: u64,
    /// How long, in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
}

impl ArpOpts {
    pub(crate) fn check(self) -> anyhow::Result<ArpOpts> {
        ensure!(
            !self.vip.is_unspecified() && !self.node_ip.is_unspecified(),
            "--vip and --node-ip must be addresses"
        );
        Ok(self)
    }
}

pub(crate) struct ArpShared {
    /// Send time of each request (ns since `epoch`, +1; 0 = not sent).
    pub(crate) sent_at: Vec<AtomicU64>,
    /// The last request sent from each slot (+1).
    pub(crate) slot_seq: Vec<AtomicU64>,
    /// Latency of each request (ns, +1; 0 = unanswered).
    pub(crate) latency: Vec<AtomicU64>,
    pub(crate) done: AtomicBool,
    pub(crate) epoch: Instant,
}

pub(crate) fn arpload(o: ArpOpts) -> anyhow::Result<()> {
    let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", o.iface))
        .with_context(|| format!("no interface {}", o.iface))?
        .trim()
        .parse()?;
    let total = usize::try_from(o.rps * 2 * o.seconds)?;
    let shared = Arc::new(ArpShared {
        sent_at: (0..total).map(|_| AtomicU64::new(0)).collect(),
        slot_seq: (0..ARP_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        latency: (0..total).map(|_| AtomicU64::new(0)).collect(),
        done: AtomicBool::new(false),
        epoch: Instant::now(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sent_secs, dup, mismatched, macs) = rt.block_on(async {
        let rx = PacketSocket::open(ifindex, Protocol::Arp).context("AF_PACKET socket")?;
        let sender = {
            let shared = shared.clone();
            let (vip, node_ip, sender_ip, rps) = (o.vip, o.node_ip, o.sender_ip, o.rps);
            std::thread::spawn(move || -> anyhow::Result<f64> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let r = rt.block_on(async {
                    let sock = PacketSocket::open(ifindex, Protocol::Arp)?;
                    let gap_ns = 1_000_000_000u64 / (2 * rps);
                    let start = Instant::now();
                    for seq in 0..total {
                        let due = start + Duration::from_nanos(gap_ns * seq as u64);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let slot = seq % ARP_SLOTS;
                        let mac = slot_mac(slot);
                        let target = if seq.is_multiple_of(2) { vip } else { node_ip };
                        let frame = Frame {
                            eth: EthernetHeader {
                                dst: MacAddr::BROADCAST,
                                src: mac,
                            },
                            message: Message::ArpRequest(ArpRequest {
                                sender_mac: mac,
                                sender_ip,
                                target_mac: MacAddr::ZERO,
                                target_ip: target,
                            }),
                        }
                        .to_bytes();
                        let t = shared.epoch.elapsed().as_nanos() as u64 + 1;
                        shared.sent_at[seq].store(t, Ordering::SeqCst);
                        shared.slot_seq[slot].store(seq as u64 + 1, Ordering::SeqCst);
                        sock.send(&frame).await?;
                    }
                    Ok::<f64, anyhow::Error>(start.elapsed().as_secs_f64())
                });
                shared.done.store(true, Ordering::SeqCst);
                r
            })
        };
        let mut buf = vec![0u8; 2048];
        let mut dup = 0u64;
        let mut mismatched = 0u64;
        let mut macs: [BTreeSet<String>; 2] = Default::default();
        let mut done_at: Option<Instant> = None;
        loop {
            if done_at.is_none() && shared.done.load(Ordering::SeqCst) {
                done_at = Some(Instant::now());
            }
            if done_at.is_some_and(|d| d.elapsed() > Duration::from_millis(500)) {
                break;
            }
            let n = match tokio::time::timeout(Duration::from_millis(50), rx.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(anyhow::Error::from(e).context("receiving")),
                Err(_) => continue,
            };
            let now = shared.epoch.elapsed().as_nanos() as u64;
            let Ok(Frame {
                message: Message::ArpReply(reply),
                ..
            }) = Frame::decode(&buf[..n])
            else {
                continue;
            };
            let m = reply.target_mac.0;
            if reply.target_ip != o.sender_ip || m[..4] != ARP_MAC_PREFIX {
                continue;
            }
            let slot = (usize::from(m[4]) << 8) | usize::from(m[5]);
            if slot >= ARP_SLOTS {
                continue;
            }
            let seq = shared.slot_seq[slot].load(Ordering::SeqCst);
            if seq == 0 {
                continue;
            }
            let seq = (seq - 1) as usize;
            let expected = if seq.is_multiple_of(2) {
                o.vip
            } else {
                o.node_ip
            };
            if reply.sender_ip != expected {
                mismatched += 1;
                continue;
            }
            macs[seq % 2].insert(reply.sender_mac.to_string());
            let sent = shared.sent_at[seq].load(Ordering::SeqCst);
            if sent == 0 {
                continue;
            }
            let lat = now.saturating_sub(sent - 1) + 1;
            if shared.latency[seq]
                .compare_exchange(0, lat, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                dup += 1;
            }
        }
        let secs = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sender thread panicked"))??;
        Ok::<_, anyhow::Error>((secs, dup, mismatched, macs))
    })?;
    let target = |parity: usize| {
        let lat: Vec<f64> = (parity..total)
            .step_by(2)
            .filter_map(|s| {
                let l = shared.latency[s].load(Ordering::SeqCst);
                (l > 0).then(|| (l - 1) as f64 / 1000.0)
            })
            .collect();
        let sent = (parity..total).step_by(2).count();
        ArpTarget {
            sent,
            answered: lat.len(),
            unanswered: sent - lat.len(),
            latency_us: summary(&lat, 1),
            macs: macs[parity].clone(),
        }
    };
    let out = ArpRun {
        requests: total,
        sender_seconds: round(sent_secs, 3),
        achieved_rps_total: round(total as f64 / sent_secs, 0),
        duplicate_replies: dup,
        mismatched_replies: mismatched,
        speaker: target(0),
        kernel: target(1),
        ..ArpRun::default()
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

impl Bench {
    pub(crate) async fn node_sysctls(&self, ns: &str) -> BTreeMap<String, String> {
        let script = "cd /proc/sys/net/ipv4 && for f in conf/eth0/arp_* conf/eth0/proxy_arp \
                      conf/eth0/rp_filter conf/all/arp_ignore conf/all/arp_filter \
                      conf/all/rp_filter neigh/eth0/locktime neigh/eth0/proxy_delay \
                       neigh/eth0/proxy_qlen neigh/eth0/retrans_time_ms neigh/eth0/unres_qlen; do echo \"$f=$(cat $f)\"; done";
        cmd("ip", &["netns", "exec", ns, "sh", "-c", script])
            .await
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(crate) async fn phase_arp(&mut self, chosen: &[Chosen]) -> anyhow::Result<()> {
        let c = chosen.first().context("no failover Service")?.clone();
        let owner = c.owner;
        let node = self.nodes[owner].clone();
        let sysctls = self.node_sysctls(&self.node_ns[owner]).await;
        let mut runs = Vec::new();
        self.arp_touched.insert(self.node_ns[owner].clone());
        for run in 0..self.opts.arp_runs {
            self.wait_stable(chosen, Instant::now() - self.hold_down * 2)
                .await?;
            self.wait_quiet("an ARP run").await;
            let before = self.speaker_view(owner).await.unwrap_or_default();
            let start_ticks = self.speaker_pid(owner).and_then(cpu_ticks);
            let out = tokio::process::Command::new("ip")
                .args(["netns", "exec", &self.client_ns])
                .arg(&self.exe)
                .args([
                    "arpload",
                    "--if",
                    "eth0",
                    "--vip",
                    &c.ip,
                    "--node-ip",
                    &node.ip4,
                    "--sender-ip",
                    &ARP_SENDER.to_string(),
                    "--rps",
                    &self.opts.arp_rps.to_string(),
                    "--seconds",
                    &self.opts.arp_seconds.to_string(),
                ])
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(self.opts.arp_seconds + 60), out)
                .await
                .context("the ARP load generator hung")??;
            ensure!(
                out.status.success(),
                "arpload failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            let end_ticks = self.speaker_pid(owner).and_then(cpu_ticks);
            let after = self.speaker_view(owner).await.unwrap_or_default();
            let mut r: ArpRun = serde_json::from_slice(&out.stdout).context("arpload output")?;
            let counted = |name: &str| after.counter(name, &c.ip) - before.counter(name, &c.ip);
            r.speaker_requests_received = Some(counted("herald_speaker_requests_received_total"));
            r.speaker_responses_sent = Some(counted("herald_speaker_responses_sent_total"));
            if let (Some(a), Some(b)) = (start_ticks, end_ticks) {
                r.speaker_cpu_s = Some(round((b - a) as f64 / self.clk_tck, 2));
            }
            for (target, replies) in [("speaker", &r.speaker), ("kernel", &r.kernel)] {
                let macs = &replies.macs;
                if macs.len() > 1 || macs.iter().any(|m| *m != node.mac.to_lowercase()) {
                    self.anomaly(format!(
                        "ARP run {run}: {target} replies came from {macs:?}, owner MAC {}",
                        node.mac
                    ));
                }
            }
            self.check_overlap(&format!("ARP run {}", run + 1), false);
            log(format!(
                "ARP run {}: speaker {} / kernel {}",
                run + 1,
                compact(&r.speaker.latency_us),
                compact(&r.kernel.latency_us)
            ));
            runs.push(r);
        }
        self.results.arp = Some(ArpPhase {
            vip: c.ip,
            node: node.name,
            node_ip: node.ip4,
            rps_per_target: self.opts.arp_rps,
            seconds: self.opts.arp_seconds,
            node_sysctls: sysctls,
            runs,
        });
        Ok(())
    }
}

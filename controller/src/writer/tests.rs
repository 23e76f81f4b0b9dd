use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::fake_api::{self, answer, hang};

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("shop".to_string(), name.to_string())
}

fn write(name: &str, ip: &str) -> (ServiceKey, StatusWrite) {
    (
        key(name),
        StatusWrite {
            key: key(name),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("7".into()),
            ips: Some(vec![ip.parse().expect("an IP")]),
            announced: None,
        },
    )
}

/// A leader until `term` from now.
fn leading_for(term: Duration) -> (watch::Sender<Option<Instant>>, Leadership) {
    let (tx, rx) = watch::channel(Some(Instant::now() + term));
    (tx, Leadership::new(rx))
}

/// A writer's context with a 5 s API timeout, and where its failures arrive.
fn context<K>(
    client: Client,
    leadership: Leadership,
    concurrency: usize,
) -> (WriterContext<K>, mpsc::UnboundedReceiver<K>) {
    let (failures, failed) = mpsc::unbounded_channel();
    let ctx = WriterContext {
        client,
        leadership,
        api_timeout: Duration::from_secs(5),
        metrics: Arc::new(Metrics::default()),
        failures,
        concurrency,
    };
    (ctx, failed)
}

struct Harness {
    batches: mpsc::UnboundedSender<Vec<(ServiceKey, StatusWrite)>>,
    failures: mpsc::UnboundedReceiver<ServiceKey>,
    log: Arc<std::sync::Mutex<Vec<fake_api::Seen>>>,
}

impl Harness {
    /// A status writer whose API server hangs on Services named `hung*` and answers others.
    fn start(leadership: Leadership, concurrency: usize) -> Harness {
        let (client, log) = fake_api::client(|seen| {
            if seen.path.contains("/services/hung") {
                hang()
            } else {
                answer(200, json!({"apiVersion": "v1", "kind": "Service"}))
            }
        });
        let (ctx, failures) = context(client, leadership, concurrency);
        let (batches, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_status_writer(ctx, rx));
        Harness {
            batches,
            failures,
            log,
        }
    }

    fn written(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|l| l.iter().map(|s| s.path.clone()).collect())
            .unwrap_or_default()
    }
}

#[test]
fn the_patch_names_the_object_it_was_decided_for() {
    let (_, w) = write("web", "192.0.2.1");
    assert_eq!(
        status_patch(&w),
        json!({
            "metadata": {"uid": "uid-web", "resourceVersion": "7"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "VIP"}]}}
        })
    );
    let cleared = StatusWrite {
        ips: Some(Vec::new()),
        ..w.clone()
    };
    assert_eq!(
        status_patch(&cleared)["status"],
        json!({"loadBalancer": {"ingress": null}})
    );
    let since = Time(Timestamp::from_second(1_700_000_000).expect("a time"));
    let announced = StatusWrite {
        ips: None,
        announced: Some(Announced {
            message: "announced by node hl-node2 on interface eth0".into(),
            since,
        }),
        ..w.clone()
    };
    assert_eq!(
        status_patch(&announced)["status"],
        json!({"conditions": [{
            "type": "herald.dev/Announced", "status": "True", "reason": "Elected",
            "message": "announced by node hl-node2 on interface eth0",
            "lastTransitionTime": "2023-11-14T22:13:20Z"
        }]})
    );
    // Waiting together, the two become one write with both.
    let both = cleared.merge(announced);
    assert_eq!(both.ips, Some(Vec::new()));
    assert!(both.announced.is_some());
    assert_eq!(truncate("ééé", 3), "é…");
}

impl Merge for u32 {
    fn merge(self, newer: u32) -> u32 {
        newer
    }
}

#[test]
fn the_queue_keeps_the_newest_write_per_object_and_one_in_flight_each() {
    let mut queue: WriteQueue<&str, u32> = WriteQueue::new(2);
    queue.push("a", 1);
    queue.push("b", 1);
    queue.push("a", 2);
    assert_eq!(queue.start(), Some(("a", 2)));
    queue.push("a", 3);
    assert_eq!(queue.start(), Some(("b", 1)));
    // Two in flight: nothing more starts, and "a" waits for its own write anyway.
    queue.push("c", 1);
    assert_eq!(queue.start(), None);
    queue.done(&"b");
    assert_eq!(queue.start(), Some(("c", 1)));
    assert_eq!(queue.start(), None, "a's next write waits for its first");
    queue.done(&"a");
    assert_eq!(queue.start(), Some(("a", 3)));
    queue.done(&"a");
    queue.done(&"c");
    assert_eq!(queue.start(), None);
    assert_eq!(queue.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hung_status_write_holds_up_only_its_own_service() {
    let (_term, leadership) = leading_for(Duration::from_secs(60));
    let mut h = Harness::start(leadership, 2);
    h.batches
        .send(vec![write("hung", "192.0.2.1")])
        .expect("writer runs");
    for (i, name) in ["b", "c", "d", "e"].iter().enumerate() {
        h.batches
            .send(vec![write(name, &format!("192.0.2.{}", i + 2))])
            .expect("writer runs");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let written = h.written();
    for name in ["b", "c", "d", "e"] {
        assert!(
            written
                .iter()
                .any(|p| p.contains(&format!("/services/{name}/status?"))),
            "{name} waited for the hung write: {written:?}"
        );
    }
    assert!(h.failures.try_recv().is_err(), "nothing failed yet");
    // The hung write is abandoned after the API timeout and handed back to be decided again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.failures.try_recv().ok(), Some(key("hung")));
}

#[tokio::test(start_paused = true)]
async fn a_write_is_cut_at_the_end_of_the_term_and_nothing_is_sent_after_it() {
    let (_term, leadership) = leading_for(Duration::from_secs(1));
    let mut h = Harness::start(leadership, 4);
    let started = Instant::now();
    h.batches
        .send(vec![write("hung", "192.0.2.1")])
        .expect("writer runs");
    let failed = h.failures.recv().await;
    assert_eq!(failed, Some(key("hung")));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "abandoned at the end of the term, not after the 5 s API timeout"
    );
    // The term is over: a new write is not sent at all.
    h.batches
        .send(vec![write("b", "192.0.2.2")])
        .expect("writer runs");
    assert_eq!(h.failures.recv().await, Some(key("b")));
    assert_eq!(
        h.written(),
        ["/api/v1/namespaces/shop/services/hung/status?&fieldManager=herald-controller"],
        "only the first write reached the API server"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_pool_status_write_holds_up_no_other_pool() {
    let (_term, leadership) = leading_for(Duration::from_secs(60));
    let (client, log) = fake_api::client(|seen| {
        if seen.path.contains("/ipaddresspools/hung") {
            hang()
        } else {
            answer(
                200,
                json!({"apiVersion": "herald.dev/v1beta1", "kind": "IPAddressPool",
                       "metadata": {"name": "other"}, "spec": {"addresses": ["192.0.2.0/28"]}}),
            )
        }
    });
    let (ctx, mut failures) = context(client, leadership, 4);
    let (batches, rx) = mpsc::unbounded_channel();
    tokio::spawn(run_pool_status_writer(ctx, rx));
    let pool = |name: &str| {
        (
            name.to_string(),
            PoolWrite {
                name: name.to_string(),
                patch: json!({"status": {}}),
            },
        )
    };
    batches
        .send(vec![pool("hung"), pool("other")])
        .expect("writer runs");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let paths: Vec<String> = log
        .lock()
        .map(|l| l.iter().map(|s| s.path.clone()).collect())
        .unwrap_or_default();
    assert!(
        paths
            .iter()
            .any(|p| p.contains("/ipaddresspools/other/status")),
        "{paths:?}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(failures.try_recv().ok(), Some("hung".to_string()));
}

//! The metrics and health endpoints both binaries serve: `/metrics` (OpenMetrics text),
//! `/healthz` (the process's main loop is turning, so the kubelet restarts a stuck one) and
//! `/readyz` (its caches are synced and it can work).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What the endpoints report.
pub trait Exposition: Send + Sync + 'static {
    /// The OpenMetrics text of every metric.
    fn metrics_text(&self) -> String;
    /// `Ok` when `/readyz` answers 200; otherwise the reason it gives.
    fn readiness(&self) -> Result<(), &'static str>;
    /// `Ok` when `/healthz` answers 200; otherwise the reason it gives. By default the process
    /// is alive whenever it answers.
    fn liveness(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Whether a main loop is still turning: it beats on every turn, and is declared stuck when
/// no beat came for longer than `max_silence`.
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    /// Milliseconds from `started` to the last beat.
    last_beat_ms: AtomicU64,
    max_silence: Duration,
}

impl Liveness {
    /// A loop that has just beaten, and is stuck after `max_silence` without a beat.
    pub fn new(max_silence: Duration) -> Liveness {
        Liveness {
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            max_silence,
        }
    }

    /// The loop turned.
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_beat_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn silence(&self) -> Duration {
        let last = Duration::from_millis(self.last_beat_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// `Ok` while the loop beats; otherwise what `/healthz` says.
    pub fn check(&self) -> Result<(), String> {
        let silence = self.silence();
        if silence > self.max_silence {
            Err(format!(
                "main loop stuck: no turn for {:.1} s (limit {:.1} s)",
                silence.as_secs_f64(),
                self.max_silence.as_secs_f64()
            ))
        } else {
            Ok(())
        }
    }
}

/// Whether a process is ready, and what `/readyz` says while it is not.
#[derive(Debug)]
pub struct Readiness {
    ready: AtomicBool,
    not_ready: &'static str,
}

impl Readiness {
    /// Not ready yet; `not_ready` is the body `/readyz` answers until it is.
    pub const fn new(not_ready: &'static str) -> Readiness {
        Readiness {
            ready: AtomicBool::new(false),
            not_ready,
        }
    }

    /// Marks the process ready or not.
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether it is ready.
    pub fn get(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// `Ok` when ready, else what `/readyz` says.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.get() {
            Ok(())
        } else {
            Err(self.not_ready)
        }
    }
}

/// The OpenMetrics text of a registry (empty, and a warning logged, if encoding fails).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    out
}

async fn metrics<E: Exposition>(State(e): State<Arc<E>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        e.metrics_text(),
    )
}

async fn healthz<E: Exposition>(State(e): State<Arc<E>>) -> impl IntoResponse {
    match e.liveness() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn readyz<E: Exposition>(State(e): State<Arc<E>>) -> impl IntoResponse {
    match e.readiness() {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// The endpoints' routes, for `serve` and for tests.
pub fn router<E: Exposition>(exposition: Arc<E>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<E>))
        .route("/healthz", get(healthz::<E>))
        .route("/readyz", get(readyz::<E>))
        .with_state(exposition)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process ends.
pub async fn serve<E: Exposition>(addr: SocketAddr, exposition: Arc<E>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics and health");
    axum::serve(listener, router(exposition)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_is_declared_stuck() {
        let liveness = Liveness::new(Duration::from_millis(50));
        assert_eq!(liveness.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(80));
        let e = liveness.check().expect_err("no beat for 80 ms");
        assert!(e.starts_with("main loop stuck: no turn for"), "{e}");
        liveness.beat();
        assert_eq!(liveness.check(), Ok(()));
    }

    struct Stuck;

    impl Exposition for Stuck {
        fn metrics_text(&self) -> String {
            String::new()
        }
        fn readiness(&self) -> Result<(), &'static str> {
            Ok(())
        }
        fn liveness(&self) -> Result<(), String> {
            Err("main loop stuck".into())
        }
    }

    #[tokio::test]
    async fn healthz_fails_while_the_loop_is_stuck() {
        use tower::ServiceExt;
        let response = router(Arc::new(Stuck))
            .oneshot(
                axum::http::Request::get("/healthz")
                    .body(axum::body::Body::empty())
                    .expect("a valid request"),
            )
            .await
            .expect("the router answers");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("a body");
        assert_eq!(&body[..], b"main loop stuck");
    }
}

//! A kube `Client` whose requests are answered by a function in the test instead of an API
//! server: what a write sent, and what happens when a request hangs or fails.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;

/// One request as the fake API server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `PATCH`, …
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The body, as JSON (`Null` when empty or not JSON).
    pub body: serde_json::Value,
}

/// What the fake answers: a status code and a JSON body.
pub type Answer = Pin<Box<dyn Future<Output = (u16, serde_json::Value)> + Send>>;

/// A client answered by `answer`; every request is also recorded in the returned log.
pub fn client<F>(answer: F) -> (Client, Arc<Mutex<Vec<Seen>>>)
where
    F: Fn(&Seen) -> Answer + Send + Sync + 'static,
{
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let answer = Arc::new(answer);
    let seen_log = log.clone();
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let (answer, log) = (answer.clone(), seen_log.clone());
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let seen = Seen {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            };
            if let Ok(mut log) = log.lock() {
                log.push(seen.clone());
            }
            let (code, body) = answer(&seen).await;
            let response = http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string().into_bytes()))
                .unwrap_or_else(|_| http::Response::new(Body::empty()));
            Ok::<_, Infallible>(response)
        }
    });
    (Client::new(service, "default"), log)
}

/// An answer now.
pub fn answer(code: u16, body: serde_json::Value) -> Answer {
    Box::pin(async move { (code, body) })
}

/// No answer, ever.
pub fn hang() -> Answer {
    Box::pin(std::future::pending())
}

/// The API server's error body for `code`.
pub fn status(code: u16, reason: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code
    })
}

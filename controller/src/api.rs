//! Every API request the controller makes, bounded in time. kube's client has no read timeout
//! by default, so a request whose connection stops answering would wait forever; here each one
//! is given up after a limit, and the caller decides what a timeout means (a failed renewal, a
//! write to retry).

use std::future::Future;
use std::time::Duration;

/// An API request that failed or took too long.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    /// No answer within the limit; the request was abandoned.
    #[error("{what}: no answer within {after:?}")]
    TimedOut {
        /// What was asked.
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The API server (or the connection) answered with an error.
    #[error("{what}: {source}")]
    Api {
        /// What was asked.
        what: &'static str,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

impl ApiCallError {
    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiCallError::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }
}

/// Runs `request`, giving up after `limit` (dropping it closes its connection).
pub async fn within<T>(
    limit: Duration,
    what: &'static str,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiCallError> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ApiCallError::Api { what, source }),
        Err(_) => Err(ApiCallError::TimedOut { what, after: limit }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_that_never_answers_times_out() {
        let hung = std::future::pending::<Result<(), kube::Error>>();
        let started = tokio::time::Instant::now();
        let e = within(Duration::from_secs(3), "get lease", hung)
            .await
            .expect_err("a hung request must time out");
        assert!(matches!(e, ApiCallError::TimedOut { .. }), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(e.to_string(), "get lease: no answer within 3s");
        assert_eq!(e.code(), None);
    }
}

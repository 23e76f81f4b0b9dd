//! SIGTERM (what the kubelet sends) and Ctrl-C turn a shutdown flag true, so a binary can hand
//! over its work (the controller its Lease, the speaker its IPs) before it exits.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// A flag that turns true on the first SIGTERM or Ctrl-C. Must be called inside a runtime.
pub fn shutdown_flag() -> std::io::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    Ok(rx)
}

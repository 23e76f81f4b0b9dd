//! A TCP proxy between a client and the lab's API server that can stop answering: paused, it
//! keeps every connection open and accepts new ones, but moves no byte in either direction —
//! an API server (or a network) that hangs, not one that refuses.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy.
pub struct PausableProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    paused: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PausableProxy {
    /// Forwards connections on a new loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<PausableProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (paused, paused_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let paused = paused_rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pipe(client_read, server_write, paused.clone()),
                        pipe(server_read, client_write, paused),
                    );
                });
            }
        });
        Ok(PausableProxy { addr, paused, task })
    }

    /// Stops moving bytes (connections stay open).
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Moves bytes again, including those held while paused.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

impl Drop for PausableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, holding each chunk while paused.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A client of the lab's API server that connects through `proxy`.
pub async fn client_through(proxy: &PausableProxy) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer()
        .await
        .context("the lab's kubeconfig")?;
    // The API server's certificate names 127.0.0.1, whatever the port.
    config.cluster_url = format!("https://{}", proxy.addr)
        .parse()
        .context("proxy URL")?;
    Ok(kube::Client::try_from(config)?)
}

/// The lab's API server address (from `HERALD_APISERVER_URL`, as `make test` exports it).
pub fn apiserver_addr() -> anyhow::Result<SocketAddr> {
    let url = std::env::var("HERALD_APISERVER_URL")
        .context("HERALD_APISERVER_URL is not set: run through tests/lab/with-control-plane.sh")?;
    let hostport = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    hostport
        .parse()
        .with_context(|| format!("HERALD_APISERVER_URL {url:?} is not https://IP:PORT"))
}

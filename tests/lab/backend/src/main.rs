//! The lab's backend pod: answers every HTTP request with the name of the node it runs on.
//!
//! `herald-lab-backend [PORT]` (default 8080) listens on `[::]` (IPv4 and IPv6). The body is
//! `$NODE_NAME` and a newline (the Deployment sets it from `spec.nodeName`); the header
//! `X-Herald-Peer` carries the client address as the backend saw it, so a test sees whether
//! kube-proxy masqueraded the request. No request logging: failover probes send a request every
//! few milliseconds. Only std and libc (SIGTERM), so the static binary is a few hundred KiB.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    // As PID 1 of its container, SIGTERM is ignored unless handled: stop at once instead of
    // waiting out the grace period.
    extern "C" fn on_sigterm(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: installing a handler that only calls an async-signal-safe function.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
    }
    let node = std::env::var("NODE_NAME").unwrap_or_else(|_| "unknown-node".into());
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        None => 8080,
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("herald-lab-backend: bad port: {e}");
            std::process::exit(2);
        }
    };
    // [::] takes IPv4 too (IPV6_V6ONLY is off by default on Linux).
    let listener = match TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("herald-lab-backend: listening on port {port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("herald-lab-backend: {node}: serving on port {port}");
    for stream in listener.incoming().flatten() {
        let node = node.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &node);
        });
    }
}

/// One request: read the head, answer, close.
fn serve(stream: TcpStream, node: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let peer = match stream.peer_addr()?.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(IpAddr::V6(v6), IpAddr::V4)
            .to_string(),
        v4 => v4.to_string(),
    };
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let body = format!("{node}\n");
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         X-Herald-Node: {node}\r\nX-Herald-Peer: {peer}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = &stream;
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

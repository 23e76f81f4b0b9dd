//! Link and address changes from rtnetlink: the speaker re-reads its interfaces the moment the
//! kernel reports a change (carrier lost, an interface down, an address added), instead of
//! finding out at the next poll. MetalLB re-scans every 10 s; a lost carrier then goes unnoticed
//! that long.

use futures::{Stream, StreamExt};
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK};

/// A stream that yields `()` for every link or address notification (the netlink connection
/// runs as a background task for the life of the process).
pub fn subscribe() -> std::io::Result<impl Stream<Item = ()> + Send + Unpin> {
    let (mut connection, _handle, messages) = rtnetlink::new_connection()?;
    connection.socket_mut().socket_mut().bind(&SocketAddr::new(
        0,
        RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
    ))?;
    tokio::spawn(connection);
    Ok(messages.map(|_| ()))
}

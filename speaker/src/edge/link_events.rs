//! Link and address changes from rtnetlink: the speaker re-reads its interfaces the moment the
//! kernel reports a change (carrier lost, an interface down, an address added), instead of
//! finding out at the next poll. MetalLB re-scans every 10 s; a lost carrier then goes unnoticed
//! that long. The interfaces' addresses (their subnets) are read over rtnetlink too.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK};
use rtnetlink::packet_route::address::AddressAttribute;

use crate::edge::interfaces;

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

/// Every address's subnet ([`crate::edge::interfaces::subnet`]), by interface index, as
/// rtnetlink reports them now.
pub async fn subnets(
    handle: &rtnetlink::Handle,
) -> Result<BTreeMap<u32, Vec<IpNet>>, rtnetlink::Error> {
    let mut out: BTreeMap<u32, Vec<IpNet>> = BTreeMap::new();
    let mut dump = handle.address().get().execute();
    while let Some(message) = dump.try_next().await? {
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on a
        // point-to-point link); IPv6 sends IFA_ADDRESS only.
        let mut address = None;
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Local(a) => address = Some(*a),
                AddressAttribute::Address(a) if address.is_none() => address = Some(*a),
                _ => {}
            }
        }
        if let Some(net) = address.and_then(|a| interfaces::subnet(a, message.header.prefix_len)) {
            let nets = out.entry(message.header.index).or_default();
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
    }
    for nets in out.values_mut() {
        nets.sort();
    }
    Ok(out)
}

/// A connection for [`subnets`] (its task runs for the life of the process).
pub fn connect() -> std::io::Result<rtnetlink::Handle> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_this_machines_subnets() {
        let handle = connect().expect("netlink socket");
        let all = subnets(&handle).await.expect("address dump");
        // Loopback's addresses stand for no subnet; whatever else there is parses.
        assert!(all.values().flatten().all(|n| !n.addr().is_loopback()));
    }
}

//! AF_PACKET sockets: one per announcing interface and protocol, bound to the interface, with a
//! classic BPF filter so the kernel hands up only ARP, or only ICMPv6 Neighbor Solicitations
//! and Advertisements — never the node's ordinary traffic.
//!
//! The only `unsafe` in Herald lives here: libc calls with structures built in this file.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::wire::MacAddr;

/// Which frames a socket receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// ARP (ethertype 0x0806).
    Arp,
    /// ICMPv6 types 135 and 136 in IPv6 without extension headers (Neighbor Discovery never
    /// carries them in practice).
    Ndp,
}

impl Protocol {
    fn ethertype(self) -> u16 {
        match self {
            Protocol::Arp => libc::ETH_P_ARP as u16,
            Protocol::Ndp => libc::ETH_P_IPV6 as u16,
        }
    }

    /// The BPF program: offsets are from the start of the Ethernet frame.
    fn filter(self) -> Vec<libc::sock_filter> {
        const LD_H_ABS: u16 = 0x28;
        const LD_B_ABS: u16 = 0x30;
        const JEQ_K: u16 = 0x15;
        const RET_K: u16 = 0x06;
        let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        match self {
            Protocol::Arp => vec![
                op(LD_H_ABS, 0, 0, 12),
                op(JEQ_K, 0, 1, 0x0806),
                op(RET_K, 0, 0, 0xffff),
                op(RET_K, 0, 0, 0),
            ],
            Protocol::Ndp => vec![
                op(LD_H_ABS, 0, 0, 12),
                op(JEQ_K, 0, 5, 0x86dd),
                op(LD_B_ABS, 0, 0, 20), // IPv6 next header
                op(JEQ_K, 0, 3, 58),    // ICMPv6
                op(LD_B_ABS, 0, 0, 54), // ICMPv6 type
                op(JEQ_K, 1, 0, 135),   // Neighbor Solicitation
                op(JEQ_K, 0, 1, 136),   // Neighbor Advertisement
                op(RET_K, 0, 0, 0xffff),
                op(RET_K, 0, 0, 0),
            ],
        }
    }
}

/// A raw Ethernet socket bound to one interface.
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl PacketSocket {
    /// Opens a socket on interface `ifindex` receiving `protocol`. Needs CAP_NET_RAW.
    pub fn open(ifindex: u32, protocol: Protocol) -> io::Result<PacketSocket> {
        let proto_be = protocol.ethertype().to_be();
        // SAFETY: plain socket(2) call; the result is checked and owned at once.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto_be),
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::other("ifindex too large"))?;
        // Filter first, so nothing unfiltered is queued between bind and attach.
        let program = protocol.filter();
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points at `program`, alive for the duration of the call.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })?;
        // SAFETY: zeroed sockaddr_ll is valid; the fields set are the documented ones.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto_be;
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // SAFETY: `fd` is an open socket owned by the AsyncFd from here on, and closed only
        // when the AsyncFd (which deregisters first) is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(PacketSocket { fd, ifindex })
    }

    fn membership(&self, mac: MacAddr, option: libc::c_int) -> io::Result<()> {
        // SAFETY: zeroed packet_mreq is valid.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = self.ifindex;
        mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&mac.0);
        // SAFETY: `mreq` is a valid packet_mreq of the size passed.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                option,
                (&mreq as *const libc::packet_mreq).cast(),
                size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    /// Receives frames sent to this multicast MAC (an IPv6 solicited-node group's), which
    /// the interface would otherwise filter out.
    pub fn join(&self, mac: MacAddr) -> io::Result<()> {
        self.membership(mac, libc::PACKET_ADD_MEMBERSHIP)
    }

    /// Stops receiving a multicast MAC.
    pub fn leave(&self, mac: MacAddr) -> io::Result<()> {
        self.membership(mac, libc::PACKET_DROP_MEMBERSHIP)
    }

    /// Receives one frame that arrived from the wire (our own transmissions are skipped).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let result = self
                .fd
                .async_io(Interest::READABLE, |fd| {
                    // SAFETY: zeroed sockaddr_ll is valid; recvfrom writes at most `len` bytes
                    // into `buf` and at most `alen` into `from`.
                    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                    let mut alen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                    let n = unsafe {
                        libc::recvfrom(
                            fd.as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            0,
                            (&mut from as *mut libc::sockaddr_ll).cast(),
                            &mut alen,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok((n as usize, from.sll_pkttype))
                    }
                })
                .await?;
            if result.1 != libc::PACKET_OUTGOING {
                return Ok(result.0);
            }
        }
    }

    /// Sends one whole Ethernet frame out of the interface.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                // SAFETY: `frame` is valid for `frame.len()` bytes.
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            })
            .await
    }
}

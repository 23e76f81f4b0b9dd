//! Why a received frame was dropped: every input that is not one of the messages the speaker
//! acts on, or breaks a rule the RFCs say to enforce, ends here (and in a counter label).

/// Why a frame was dropped. Every input that is not one of the [`Frame`] messages, or breaks a
/// rule the RFCs say to enforce, ends here — never in a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Shorter than the headers it claims to have.
    #[error("truncated")]
    Truncated,
    /// Neither ARP nor IPv6 (including 802.1Q-tagged frames: Linux hands AF_PACKET sockets
    /// untagged frames on the VLAN's own interface).
    #[error("ethertype is neither ARP nor IPv6")]
    UnknownEtherType,
    /// ARP hardware type is not Ethernet (1) or its address length is not 6 (RFC 826).
    #[error("ARP hardware type is not Ethernet/6")]
    BadHardware,
    /// ARP protocol type is not IPv4 (0x0800) or its address length is not 4 (RFC 826).
    #[error("ARP protocol type is not IPv4/4")]
    BadProtocol,
    /// ARP operation is neither request (1) nor reply (2): RARP, InARP and the like.
    #[error("ARP operation is neither request nor reply")]
    BadOperation,
    /// The Ethernet or link-layer source is multicast, broadcast or zero, or the IP source is
    /// multicast: nothing may be answered to it (RFC 1812 §3.3.2, RFC 4291 §2.7).
    #[error("sender address is not a unicast address")]
    BadSender,
    /// An IPv6 ethertype whose version nibble is not 6.
    #[error("IP version is not 6")]
    BadIpVersion,
    /// IPv6, but the next header is not ICMPv6. Extension headers are not followed: a Neighbor
    /// Solicitation never needs one, and following them is the classic parser attack surface.
    #[error("IPv6 next header is not ICMPv6")]
    NotIcmpv6,
    /// ICMPv6, but not a Neighbor Solicitation or Advertisement.
    #[error("ICMPv6 message is not a Neighbor Solicitation or Advertisement")]
    NotNeighborDiscovery,
    /// IPv6 hop limit is not 255, so the message may have crossed a router (RFC 4861 §7.1).
    #[error("IPv6 hop limit is not 255")]
    BadHopLimit,
    /// ICMPv6 code is not 0 (RFC 4861 §7.1).
    #[error("ICMPv6 code is not 0")]
    BadCode,
    /// ICMPv6 checksum does not verify (RFC 4443 §2.3).
    #[error("ICMPv6 checksum is wrong")]
    BadChecksum,
    /// An NDP option has length 0, runs past the message, or a link-layer address option is
    /// shorter than a MAC (RFC 4861 §4.6, RFC 2464 §6).
    #[error("malformed NDP option")]
    BadOption,
    /// The NDP target address is multicast (RFC 4861 §7.1).
    #[error("NDP target is a multicast address")]
    MulticastTarget,
    /// A Duplicate Address Detection probe (unspecified source) carrying a source link-layer
    /// option (RFC 4861 §7.1.1).
    #[error("DAD solicitation carries a source link-layer option")]
    DadWithLinkLayerAddress,
    /// A Duplicate Address Detection probe not sent to a solicited-node group (RFC 4861 §7.1.1).
    #[error("DAD solicitation not sent to a solicited-node multicast address")]
    DadNotToSolicitedNode,
    /// A Neighbor Advertisement with the Solicited flag sent to a multicast address
    /// (RFC 4861 §7.1.2).
    #[error("solicited Neighbor Advertisement sent to a multicast address")]
    SolicitedToMulticast,
}

impl DropReason {
    /// Every reason, for pre-registering counters so a dashboard shows zeros, not gaps.
    pub const ALL: [DropReason; 17] = [
        DropReason::Truncated,
        DropReason::UnknownEtherType,
        DropReason::BadHardware,
        DropReason::BadProtocol,
        DropReason::BadOperation,
        DropReason::BadSender,
        DropReason::BadIpVersion,
        DropReason::NotIcmpv6,
        DropReason::NotNeighborDiscovery,
        DropReason::BadHopLimit,
        DropReason::BadCode,
        DropReason::BadChecksum,
        DropReason::BadOption,
        DropReason::MulticastTarget,
        DropReason::DadWithLinkLayerAddress,
        DropReason::DadNotToSolicitedNode,
        DropReason::SolicitedToMulticast,
    ];

    /// A short, stable label for the dropped-frames counter.
    pub const fn metric_label(&self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::UnknownEtherType => "unknown_ethertype",
            DropReason::BadHardware => "bad_hardware",
            DropReason::BadProtocol => "bad_protocol",
            DropReason::BadOperation => "bad_operation",
            DropReason::BadSender => "bad_sender",
            DropReason::BadIpVersion => "bad_ip_version",
            DropReason::NotIcmpv6 => "not_icmpv6",
            DropReason::NotNeighborDiscovery => "not_ndp",
            DropReason::BadHopLimit => "bad_hop_limit",
            DropReason::BadCode => "bad_code",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::BadOption => "bad_option",
            DropReason::MulticastTarget => "multicast_target",
            DropReason::DadWithLinkLayerAddress => "dad_with_lladdr",
            DropReason::DadNotToSolicitedNode => "dad_bad_destination",
            DropReason::SolicitedToMulticast => "solicited_to_multicast",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels_are_unique_and_snake_case() {
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.metric_label()).collect();
        assert!(labels.iter().all(|l| {
            l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }));
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }
}

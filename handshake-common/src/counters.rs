//! Counter layout of the per-CPU `COUNTERS` array.
//!
//! Each counter exists once per (interface slot, address family, direction),
//! so the agent can label every series with `iface`, `family` and
//! `direction` without the kernel doing more than an index computation.
//!
//! Interface slots are handed out by the agent (the `IFACES` array maps an
//! ifindex to its slot); slot 0 counts every interface without one, so the
//! number of series stays bounded whatever the host's interface count.

/// Address family of a flow, as a slot index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Family {
    Ipv4 = 0,
    Ipv6 = 1,
}

impl Family {
    pub const ALL: [Self; 2] = [Self::Ipv4, Self::Ipv6];

    pub const fn label(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }

    pub const fn from_u8(v: u8) -> Self {
        if v == Self::Ipv6 as u8 {
            Self::Ipv6
        } else {
            Self::Ipv4
        }
    }
}

/// Who initiated the connection, seen from this host.
///
/// A SYN that arrives on ingress belongs to an inbound connection (a remote
/// client to a local server); a SYN leaving on egress to an outbound one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    Inbound = 0,
    Outbound = 1,
}

impl Direction {
    pub const ALL: [Self; 2] = [Self::Inbound, Self::Outbound];

    pub const fn label(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }

    pub const fn from_u8(v: u8) -> Self {
        if v == Self::Outbound as u8 {
            Self::Outbound
        } else {
            Self::Inbound
        }
    }

    /// Direction of the connection a segment belongs to, given the hook that
    /// saw it and whether the segment was sent by the connection's initiator.
    pub const fn of_segment(egress: bool, from_initiator: bool) -> Self {
        // initiator's segment on ingress, or responder's on egress: inbound.
        if egress == from_initiator {
            Self::Outbound
        } else {
            Self::Inbound
        }
    }
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal ),+ $(,)?) => {
        /// One counter of the `COUNTERS` map. The discriminant is the index
        /// within a (family, direction) slot.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Counter {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// A stable snake_case name (used in tests and debug output).
            pub const fn name(self) -> &'static str {
                match self { $( Self::$variant => $name, )+ }
            }
        }
    };
}

counters! {
    /// Every frame a hook looked at (TCP or not). Counted before parsing,
    /// so always under the IPv4 family slot and the hook's direction; the
    /// agent labels it by hook and interface only.
    Packets = "packets",
    /// TCP segments with SYN set and ACK clear.
    SynPackets = "syn_packets",
    /// New handshake attempts (first SYN of a flow, or a SYN with a new ISN).
    Attempts = "attempts",
    /// SYN-ACKs that acknowledged a tracked SYN correctly (first one only).
    SynAck = "synack",
    /// Handshakes completed by an ACK with seq = x+1 and ack = y+1.
    Completed = "completed",
    /// SYNs answered by a RST.
    Rejected = "rejected",
    /// RST from either side after the SYN, before completion (not an answer to the SYN).
    Aborted = "aborted",
    /// SYN with the same ISN as the tracked one.
    RetransmitSyn = "retransmit_syn",
    /// SYN-ACK with the same server ISN as the tracked one.
    RetransmitSynAck = "retransmit_synack",
    /// SYN-ACK whose ack is not client ISN + 1 (state unchanged).
    InvalidSynAckAck = "invalid_synack_ack",
    /// SYN-ACK with a different server ISN than the one already seen.
    InvalidSynAckSeq = "invalid_synack_seq",
    /// Final ACK whose seq is not client ISN + 1.
    InvalidAckSeq = "invalid_ack_seq",
    /// Final ACK whose ack is not server ISN + 1.
    InvalidAckAck = "invalid_ack_ack",
    /// RST whose ack does not acknowledge the SYN.
    InvalidRst = "invalid_rst",
    /// SYN-ACK with no tracked SYN (e.g. backscatter of a spoofed flood).
    Unsolicited = "unsolicited",
    /// SYNs counted but not tracked because the per-CPU insert budget was spent.
    SynUntracked = "syn_untracked",
    /// SYNs counted but not tracked because the map update failed.
    SynInsertFailed = "syn_insert_failed",
    /// Handshakes that expired in syn_sent (no valid SYN-ACK in time).
    TimeoutSynSent = "timeout_syn_sent",
    /// Handshakes that expired in syn_received (no final ACK in time).
    TimeoutSynReceived = "timeout_syn_received",
    /// Handshake segments of an attempt already counted as a timeout: the
    /// peers' retransmissions after we gave up on it.
    LateSegment = "late_segment",
    /// A tracked attempt in syn_sent replaced by a SYN with a new ISN (port reuse).
    SupersededSynSent = "superseded_syn_sent",
    /// A tracked attempt in syn_received replaced by a SYN with a new ISN.
    SupersededSynReceived = "superseded_syn_received",
    /// A handshake in syn_sent evicted from a full flow-table bucket by a new one.
    EvictedSynSent = "evicted_syn_sent",
    /// A handshake in syn_received evicted from a full flow-table bucket by a new one.
    EvictedSynReceived = "evicted_syn_received",
    /// The same segment seen again at a second hook (e.g. both ends of a veth pair).
    DuplicateObservation = "duplicate_observation",
    /// Non-first IPv4/IPv6 fragments (no TCP header to read).
    Fragments = "fragments",
    /// Parse errors, by reason.
    ParseEthTruncated = "parse_eth_truncated",
    ParseVlanTruncated = "parse_vlan_truncated",
    ParseTooManyVlans = "parse_too_many_vlans",
    ParseIpv4Truncated = "parse_ipv4_truncated",
    ParseIpv4BadHeaderLength = "parse_ipv4_bad_header_length",
    ParseIpv6Truncated = "parse_ipv6_truncated",
    ParseIpv6ExtTruncated = "parse_ipv6_ext_truncated",
    ParseIpv6ExtChainTooLong = "parse_ipv6_ext_chain_too_long",
    ParseTcpTruncated = "parse_tcp_truncated",
    ParseTcpBadDataOffset = "parse_tcp_bad_data_offset",
}

/// Counters per (family, direction) pair.
pub const COUNTERS_PER_SLOT: u32 = Counter::ALL.len() as u32;
/// (family, direction) pairs.
pub const SLOTS: u32 = 4;
/// Counters per interface slot.
pub const COUNTERS_PER_IFACE: u32 = COUNTERS_PER_SLOT * SLOTS;
/// Interface slots, a power of two; slot [`OTHER_IFACE_SLOT`] included.
pub const IFACE_SLOTS: u32 = 64;
/// The slot of every interface the agent gave no slot of its own.
pub const OTHER_IFACE_SLOT: u32 = 0;
/// ifindexes the `IFACES` array covers; larger ones count as "other".
pub const MAX_IFINDEX: u32 = 4096;
/// Entries of the `COUNTERS` per-CPU array.
pub const COUNTERS_LEN: u32 = COUNTERS_PER_IFACE * IFACE_SLOTS;

/// Index of `counter` for an interface slot, family and direction in the
/// `COUNTERS` array.
#[inline(always)]
pub const fn counter_index(
    iface_slot: u32,
    family: Family,
    direction: Direction,
    counter: Counter,
) -> u32 {
    // The mask keeps the index provably in bounds for the verifier.
    (iface_slot & (IFACE_SLOTS - 1)) * COUNTERS_PER_IFACE
        + ((family as u32) * 2 + direction as u32) * COUNTERS_PER_SLOT
        + counter as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_distinct() {
        let mut seen = [false; COUNTERS_LEN as usize];
        for slot in 0..IFACE_SLOTS {
            for f in Family::ALL {
                for d in Direction::ALL {
                    for &c in Counter::ALL {
                        let i = counter_index(slot, f, d, c) as usize;
                        assert!(!seen[i], "{slot} {f:?} {d:?} {c:?} collides");
                        seen[i] = true;
                    }
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(
            counter_index(
                IFACE_SLOTS,
                Family::Ipv4,
                Direction::Inbound,
                Counter::Packets
            ),
            0,
            "masked"
        );
    }

    #[test]
    fn direction_of_segments() {
        // client SYN arriving: inbound; our SYN-ACK leaving: inbound.
        assert_eq!(Direction::of_segment(false, true), Direction::Inbound);
        assert_eq!(Direction::of_segment(true, false), Direction::Inbound);
        // our SYN leaving, their SYN-ACK arriving: outbound.
        assert_eq!(Direction::of_segment(true, true), Direction::Outbound);
        assert_eq!(Direction::of_segment(false, false), Direction::Outbound);
    }
}

//! The flow table: one entry per handshake in progress, keyed on the
//! initiator's 5-tuple, freed when the handshake ends.

/// Initiator's 5-tuple. Addresses are kept as the raw network-order bytes of
/// the packet (IPv4 in the first word, the rest zero); ports in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FlowKey {
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
    pub src_port: u16,
    pub dst_port: u16,
    /// [`crate::counters::Family`] as u8.
    pub family: u8,
    // Padding as integers, not `[u8; 3]`: zeroing a byte array made LLVM
    // call `memset` on every key the kernel side built.
    pub _pad8: u8,
    pub _pad16: u16,
}

impl FlowKey {
    #[inline(always)]
    #[must_use]
    pub const fn new(
        src_addr: [u32; 4],
        dst_addr: [u32; 4],
        src_port: u16,
        dst_port: u16,
        family: u8,
    ) -> Self {
        Self {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            family,
            _pad8: 0,
            _pad16: 0,
        }
    }

    /// The key of the flow `seg` travels on, from its sender to its
    /// receiver.
    #[inline(always)]
    #[must_use]
    pub const fn of_segment(seg: &crate::parse::TcpSegment) -> Self {
        Self::new(
            seg.src_addr,
            seg.dst_addr,
            seg.src_port,
            seg.dst_port,
            seg.family as u8,
        )
    }

    /// The same flow seen from the other end: the key a responder's segment
    /// maps to.
    #[inline(always)]
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self::new(
            self.dst_addr,
            self.src_addr,
            self.dst_port,
            self.src_port,
            self.family,
        )
    }
}

/// Where a handshake stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// SYN seen, no valid SYN-ACK yet.
    SynSent = 1,
    /// Valid SYN-ACK seen, waiting for the final ACK.
    SynReceived = 2,
    /// Timed out and counted: a tombstone, kept a while so that the peers'
    /// late retransmissions are recognised as such (not as new attempts or
    /// backscatter), then forgotten by the agent.
    Expired = 3,
    /// Completed, rejected or aborted, and counted: a tombstone kept for
    /// [`crate::expire::ENDED_LINGER_NS`] so that what the peers send again
    /// (a SYN retried with its ISN after a RST, a SYN-ACK retransmitted
    /// after the final ACK, the whole handshake seen a second time) is a
    /// retransmission or a duplicate, not a new attempt or unsolicited.
    /// Past that, it is free space: the next flow that needs the way takes
    /// it, and nothing reads it as a flow.
    Ended = 4,
    /// Tap mode only: a SYN-ACK seen before any SYN of its flow, which a
    /// mirror with two ports or two queues can deliver first. Not yet
    /// counted: for [`crate::expire::REORDER_WINDOW_NS`] it waits for the
    /// SYN it acknowledges, and the pair then counts as an attempt and its
    /// SYN-ACK; otherwise it is counted unsolicited and freed.
    SynAckFirst = 5,
}

impl Stage {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::SynSent),
            2 => Some(Self::SynReceived),
            3 => Some(Self::Expired),
            4 => Some(Self::Ended),
            5 => Some(Self::SynAckFirst),
            _ => None,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Self::SynSent => "syn_sent",
            Self::SynReceived => "syn_received",
            Self::Expired => "expired",
            Self::Ended => "ended",
            Self::SynAckFirst => "synack_first",
        }
    }
}

/// One observation point: an interface and a side of it. Used to tell a
/// retransmission (same hook, later) from the same packet seen twice (two
/// hooks, e.g. both ends of a veth pair on this host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Hook {
    pub ifindex: u32,
    /// 1 on egress (TC), 0 on ingress (XDP). A whole word, not a byte and
    /// two padding fields: a new flow's state has this, the SYN-ACK hook and
    /// their padding all zero, and LLVM turned that run of seven small
    /// stores into a call to `memset` (a byte loop) on every new flow.
    pub egress: u32,
}

impl Hook {
    pub const fn new(ifindex: u32, egress: bool) -> Self {
        Self {
            ifindex,
            egress: egress as u32,
        }
    }
}

/// State of one handshake in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FlowState {
    /// Monotonic time (ns) of the SYN that started this attempt.
    pub syn_ns: u64,
    /// Monotonic time (ns) of the first valid SYN-ACK, 0 before it. In
    /// [`Stage::Ended`], when the handshake ended: the final ACK's time, or
    /// for a RST the last time it had read (its SYN's or SYN-ACK's).
    pub synack_ns: u64,
    /// Client ISN (x).
    pub client_isn: u32,
    /// Server ISN (y), valid in [`Stage::SynReceived`].
    pub server_isn: u32,
    /// The ack the SYN-ACK carried: x+1, or x+1+len when the server accepted
    /// TCP Fast Open data on the SYN. The final ACK's seq must equal it.
    pub synack_ack: u32,
    /// Payload bytes carried by the SYN (TCP Fast Open).
    pub syn_payload: u16,
    /// [`Stage`] as u8.
    pub stage: u8,
    /// [`crate::counters::Direction`] as u8.
    pub direction: u8,
    /// Hook that saw the SYN.
    pub syn_hook: Hook,
    /// Hook that saw the SYN-ACK.
    pub synack_hook: Hook,
    /// Interface slot of the hook that saw the SYN: every later event of this
    /// handshake is counted there.
    pub iface_slot: u8,
    /// In [`Stage::Ended`]: the [`Stage`] it ended from, which says whether
    /// a SYN-ACK (and its ISN) belongs to it.
    pub ended_from: u8,
    /// Payload bytes the SYN-ACK carried: the final ACK may acknowledge
    /// them too (y+1 up to y+1+len).
    pub synack_payload: u16,
    /// The window the SYN-ACK advertised: a RST from the client lands
    /// anywhere in it (the server's request socket accepts any in-window
    /// RST, tcp_check_req).
    pub synack_window: u16,
    pub _pad16: u16,
}

impl FlowState {
    /// A timed-out or ended handshake, kept only to recognise what its
    /// peers send again: no handshake in progress.
    #[inline(always)]
    #[must_use]
    pub const fn is_tombstone(&self) -> bool {
        self.stage == Stage::Expired as u8 || self.stage == Stage::Ended as u8
    }

    /// An ended handshake still remembered at `now_ns`.
    #[inline(always)]
    #[must_use]
    pub const fn ended_recently(&self, now_ns: u64) -> bool {
        self.stage == Stage::Ended as u8
            && now_ns.wrapping_sub(self.synack_ns) < crate::expire::ENDED_LINGER_NS
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding fields, no
    // pointers; any bit pattern is valid.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above; `Hook` is two whole words, the layout has no holes.
    unsafe impl aya::Pod for super::FlowState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        // The kernel hashes the key's raw bytes: implicit padding would make
        // equal keys hash differently.
        assert_eq!(size_of::<FlowKey>(), 16 + 16 + 2 + 2 + 1 + 3);
        assert_eq!(size_of::<Hook>(), 8);
        assert_eq!(
            size_of::<FlowState>(),
            8 + 8 + 4 * 3 + 2 + 1 + 1 + 8 + 8 + 8
        );
    }

    #[test]
    fn reversed_twice_is_identity() {
        let k = FlowKey::new([1, 0, 0, 0], [2, 0, 0, 0], 3, 4, 0);
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().src_port, 4);
    }
}

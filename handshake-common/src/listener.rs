//! Per-listener counters: the SYN -> SYN-ACK -> ACK funnel of each local
//! server port, for inbound handshakes.
//!
//! The agent chooses the ports (the host's listening sockets, or the ones an
//! operator names) by inserting zeroed entries; the kernel never inserts, it
//! only counts into an existing entry, or into [`OTHER_PORT`]'s. So the map,
//! and the label cardinality, stay bounded however many ports a scan hits.

/// The key under which every port the agent did not choose is counted.
pub const OTHER_PORT: u16 = 0;
/// Capacity of the `LISTENERS` map, [`OTHER_PORT`] included.
pub const MAX_LISTENERS: u32 = 1024;

/// One listener's funnel. Per CPU in the map; the agent sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ListenerCounters {
    pub attempts: u64,
    pub synack: u64,
    pub completed: u64,
    pub rejected: u64,
    pub aborted: u64,
}

impl core::ops::AddAssign for ListenerCounters {
    fn add_assign(&mut self, o: Self) {
        self.attempts += o.attempts;
        self.synack += o.synack;
        self.completed += o.completed;
        self.rejected += o.rejected;
        self.aborted += o.aborted;
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, five u64s, no padding.
unsafe impl aya::Pod for ListenerCounters {}

//! Per-listener counters: the SYN -> SYN-ACK -> ACK funnel of each local
//! server port, for inbound handshakes.
//!
//! The agent chooses the ports (the host's listening sockets, or the ones an
//! operator names) and gives each a slot: `LISTENER_SLOTS[port] = slot`.
//! The kernel counts into `LISTENERS[slot]`, slot 0 for every port without
//! one. Both are arrays: a lookup is an inlined bounds check and a load, no
//! hashing on the handshake path; and the series count stays bounded
//! however many ports a scan hits.

/// Reported as the port of slot 0: every port the agent did not choose.
pub const OTHER_PORT: u16 = 0;
/// Slots of the `LISTENERS` array, slot 0 ("other") included.
pub const MAX_LISTENERS: u32 = 1024;
/// Entries of the `LISTENER_SLOTS` array: one per port.
pub const PORTS: u32 = 65536;

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

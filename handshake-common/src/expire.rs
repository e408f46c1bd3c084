//! Expiring a handshake that waited too long.
//!
//! The agent finds expired entries by scanning the flow table, but does not
//! delete them itself: it runs the never-attached `handshake_expire` program
//! with BPF_PROG_TEST_RUN, passing an [`ExpireRequest`] as the packet. Done
//! in the kernel, the delete, the timeout count (per-CPU, in the same
//! `COUNTERS` as everything else, so pinned maps carry it across restarts)
//! and the atomic decrement of the pending filter cannot race the programs
//! that see live traffic.

use crate::flow::FlowKey;

/// How long a timed-out handshake lingers as a tombstone
/// ([`crate::flow::Stage::Expired`]) after its timeout: longer than Linux
/// keeps retrying a SYN (127 s with tcp_syn_retries = 6, from the first
/// SYN), so a retransmission is never taken for a new attempt.
pub const TOMBSTONE_LINGER_NS: u64 = 130_000_000_000;

/// How long an ended handshake ([`crate::flow::Stage::Ended`]) is
/// remembered: past a client's connect() retries after a RST (Windows
/// resends the same SYN twice, half a second apart) and a server's first
/// two SYN-ACK retransmissions (1 s, then 2 s more) when the final ACK was
/// lost after the point we watch. A new connection on the same ports
/// within it has a new ISN, and starts a new attempt all the same.
pub const ENDED_LINGER_NS: u64 = 5_000_000_000;

/// Tap mode: how long a SYN-ACK seen before its SYN
/// ([`crate::flow::Stage::SynAckFirst`]) waits for it. Two mirror ports or
/// two queues put a few hundred microseconds between them; a SYN later
/// than this is another attempt, and the SYN-ACK was unsolicited.
pub const REORDER_WINDOW_NS: u64 = 10_000_000;

/// What the agent asks of `handshake_expire`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ExpireRequest {
    pub key: FlowKey,
    /// The attempt to act on, by its SYN time: if the entry now holds a
    /// newer attempt (port reuse since the scan), it is left alone.
    pub syn_ns: u64,
    /// 0: expire a handshake in progress (count the timeout, leave a
    /// tombstone); 1: forget a tombstone.
    pub forget: u8,
    pub _pad: [u8; 7],
}

/// `handshake_expire`'s return value: done (expired and counted, or forgotten).
pub const EXPIRED: u32 = 1;
/// `handshake_expire`'s return value: nothing to do (gone, a newer attempt,
/// or not in the stage the request expects).
pub const NOT_EXPIRED: u32 = 0;

impl ExpireRequest {
    /// The request as the bytes of a test-run "packet". Padded to the
    /// Ethernet minimum, which BPF_PROG_TEST_RUN requires.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        // SAFETY: `#[repr(C)]` with explicit padding only, and smaller than 64.
        let raw = unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        };
        out[..raw.len()].copy_from_slice(raw);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fits_a_minimal_frame() {
        assert!(size_of::<ExpireRequest>() <= 64);
        let r = ExpireRequest {
            syn_ns: 0x0102_0304_0506_0708,
            ..ExpireRequest::default()
        };
        let bytes = r.to_bytes();
        assert_eq!(&bytes[40..48], &0x0102_0304_0506_0708u64.to_ne_bytes());
    }
}

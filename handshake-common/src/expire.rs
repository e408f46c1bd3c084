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

/// What the agent asks of `handshake_expire`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ExpireRequest {
    pub key: FlowKey,
    /// The attempt to expire, by its SYN time: if the entry now holds a newer
    /// attempt (port reuse since the scan), it is left alone.
    pub syn_ns: u64,
}

/// `handshake_expire`'s return value: the entry was freed and counted.
pub const EXPIRED: u32 = 1;
/// `handshake_expire`'s return value: gone already, or a newer attempt.
pub const NOT_EXPIRED: u32 = 0;

impl ExpireRequest {
    /// The request as the bytes of a test-run "packet". Padded to the
    /// Ethernet minimum, which BPF_PROG_TEST_RUN requires.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        // SAFETY: `#[repr(C)]` with explicit padding only, and smaller than 64.
        let raw = unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>()) };
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
        let r = ExpireRequest { syn_ns: 0x0102_0304_0506_0708, ..ExpireRequest::default() };
        let bytes = r.to_bytes();
        assert_eq!(&bytes[40..48], &0x0102_0304_0506_0708u64.to_ne_bytes());
    }
}

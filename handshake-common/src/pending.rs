//! The pending-handshake filter: what lets an ordinary data segment skip the
//! flow-table lookup.
//!
//! Any ACK from an initiator could be the final ACK of a handshake, but only
//! a flow in syn_received can complete. `PENDING` is an array of counters,
//! indexed by a cheap hash of the initiator's 5-tuple: a SYN-ACK that moves a
//! flow to syn_received adds one to its slot, and whoever frees a
//! syn_received entry (completion, RST, port reuse; the agent for timeouts)
//! takes one away. An ACK whose slot is 0 cannot complete anything, and costs
//! a hash and an array read instead of a hash-map lookup.
//!
//! Errors only go one way: an entry the LRU evicts in syn_received leaves its
//! slot one too high, which costs a needless lookup, never a missed
//! completion.

use crate::flow::FlowKey;

/// Slots of the `PENDING` array (a power of two).
pub const PENDING_SLOTS: u32 = 1 << 16;

/// Slot of `key` in the `PENDING` array.
#[inline(always)]
pub const fn pending_slot(key: &FlowKey) -> u32 {
    let s = key.src_addr;
    let d = key.dst_addr;
    let mut h = s[0] ^ s[1].rotate_left(7) ^ s[2].rotate_left(13) ^ s[3].rotate_left(19);
    h ^= (d[0] ^ d[1].rotate_left(7) ^ d[2].rotate_left(13) ^ d[3].rotate_left(19)).rotate_left(11);
    h ^= ((key.src_port as u32) << 16) | key.dst_port as u32;
    // Fibonacci hashing: the top bits of the product are well mixed.
    h.wrapping_mul(0x9E37_79B1) >> (32 - PENDING_SLOTS.trailing_zeros())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn key(a: u32, sport: u16) -> FlowKey {
        FlowKey { src_addr: [a, 0, 0, 0], dst_addr: [7, 0, 0, 0], src_port: sport, dst_port: 80, family: 0, _pad: [0; 3] }
    }

    #[test]
    fn slots_are_in_range_and_spread() {
        let mut used = std::collections::HashSet::new();
        for port in 0..4096u16 {
            let slot = pending_slot(&key(0x0100_12c6, 30000 + port));
            assert!(slot < PENDING_SLOTS);
            used.insert(slot);
        }
        // 4096 keys that differ only in the source port land in nearly as
        // many slots.
        assert!(used.len() > 3900, "{} distinct slots", used.len());
    }
}

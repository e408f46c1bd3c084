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
//! A new flow that evicts one in syn_received from the flow table takes one
//! away too (see [`crate::table`]), so the counts stay exact.

use crate::{counters::Family, flow::FlowKey};

/// Slots of the `PENDING` array (a power of two).
pub const PENDING_SLOTS: u32 = 1 << 16;

/// Slot of `key` in the `PENDING` array.
#[inline(always)]
pub const fn pending_slot(key: &FlowKey) -> u32 {
    pending_slot_of(
        key.family == Family::Ipv4 as u8,
        &key.src_addr,
        &key.dst_addr,
        key.src_port,
        key.dst_port,
    )
}

/// [`pending_slot`] from a segment's fields, before (or without) building
/// its key: the data-segment path in the kernel.
#[inline(always)]
pub const fn pending_slot_of(
    ipv4: bool,
    s: &[u32; 4],
    d: &[u32; 4],
    src_port: u16,
    dst_port: u16,
) -> u32 {
    if ipv4 {
        pending_slot_folded(s[0], d[0], src_port, dst_port)
    } else {
        pending_slot_folded(
            s[0] ^ s[1] ^ s[2] ^ s[3],
            d[0] ^ d[1] ^ d[2] ^ d[3],
            src_port,
            dst_port,
        )
    }
}

/// The slot from each address folded to one word: an IPv4 address as it
/// is, an IPv6 address's four words XORed together (the other IPv4 words
/// are zero, so one formula serves both families).
///
/// Plain XOR, no rotations: BPF has no rotate instruction (each rotation is
/// three), and the data-segment screen folds an IPv6 address from two
/// 64-bit loads, which XOR allows and rotations would not. The multiply
/// does the mixing; two addresses whose words XOR to the same value share
/// a slot, which costs at worst a needless lookup.
#[inline(always)]
pub const fn pending_slot_folded(src: u32, dst: u32, src_port: u16, dst_port: u16) -> u32 {
    pending_slot_of_ports(src, dst, ((src_port as u32) << 16) | dst_port as u32)
}

/// [`pending_slot_folded`] with both ports in one word, source port high:
/// the TCP header's first word in host order, which the data-segment screen
/// reads in one load.
#[inline(always)]
pub const fn pending_slot_of_ports(src: u32, dst: u32, ports: u32) -> u32 {
    let h = src ^ dst.rotate_left(11) ^ ports;
    // Fibonacci hashing: the top bits of the product are well mixed.
    h.wrapping_mul(0x9E37_79B1) >> (32 - PENDING_SLOTS.trailing_zeros())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn key(a: u32, sport: u16) -> FlowKey {
        FlowKey::new([a, 0, 0, 0], [7, 0, 0, 0], sport, 80, 0)
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

    #[test]
    fn ipv6_slots_spread() {
        let mut by_address = std::collections::HashSet::new();
        let mut by_port = std::collections::HashSet::new();
        for i in 0..4096u32 {
            // Clients that differ in the interface identifier's last word,
            // and one client's source ports.
            let client = [0x2001_0db8u32.to_be(), 0, 0, (0x1000 + i).to_be()];
            let server = [0x2001_0db8u32.to_be(), 0, 0, 1u32.to_be()];
            by_address.insert(pending_slot_of(false, &client, &server, 40000, 443));
            by_port.insert(pending_slot_of(
                false,
                &server,
                &server,
                30000 + i as u16,
                443,
            ));
        }
        assert!(
            by_address.len() > 3900,
            "{} distinct slots by address",
            by_address.len()
        );
        assert!(
            by_port.len() > 3900,
            "{} distinct slots by port",
            by_port.len()
        );
    }

    /// The IPv4 shortcut must give the slot the full formula gives: the
    /// kernel uses one on some paths and the other on others.
    fn full_formula(key: &FlowKey) -> u32 {
        pending_slot_of(
            false,
            &key.src_addr,
            &key.dst_addr,
            key.src_port,
            key.dst_port,
        )
    }

    proptest::proptest! {
        #[test]
        fn ipv4_shortcut_matches_the_full_formula(src: u32, dst: u32, sport: u16, dport: u16) {
            let key = FlowKey::new([src, 0, 0, 0], [dst, 0, 0, 0], sport, dport, Family::Ipv4 as u8);
            proptest::prop_assert_eq!(pending_slot(&key), full_formula(&key));
        }
    }
}

//! The data-segment screen: the kernel's fast path for the frames a busy
//! host sees most, segments of connections already open.
//!
//! Such a segment needs one thing from us: the pending filter's verdict that
//! it cannot complete a handshake (see [`crate::pending`]). The full parse
//! reads its headers in a chain: the IPv4 header length decides where TCP
//! starts, and the segment it builds carries every field, IPv6's too, so the
//! kernel spills and reloads them on the way to the filter. The screen
//! covers only the usual layouts, in which every field sits at a fixed
//! offset: Ethernet with at most one VLAN tag, then IPv4 without options or
//! IPv6 without extension headers, then TCP. All its loads can start at
//! once; other frames pay its few tests before the full parse (the costs
//! are B1's rows in BENCHMARKS.md).
//!
//! On a path this short every instruction shows, so the screen tests
//! fields as they sit in the frame, against
//! constants put in network order at compile time; tests fields that share
//! a word with one load and one mask (IPv4's fragment offset and protocol);
//! reads both ports as one word; and tries untagged IPv4 first.
//!
//! The contract, property-tested against the full parse: when the screen
//! returns `Some(slot)`, [`super::parse_ethernet`] reads the frame as a TCP
//! segment that [`crate::handshake::classify`] calls an ACK, and `slot` is
//! that segment's [`crate::pending::pending_slot_of`]. Any other frame,
//! including every malformed one, gives `None` and goes through the full
//! parse, which counts what it finds.

use super::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, PacketView, TCP_ACK, TCP_RST,
    TCP_SYN, TcpHeader,
};
use crate::pending::pending_slot_of_ports;

// The screen compares fields as they sit in the frame (network order)
// against constants turned to network order when compiled: no byte swap
// at run time for a test.
const IP_WIRE: u16 = ETH_P_IP.to_be();
const IPV6_WIRE: u16 = ETH_P_IPV6.to_be();
const VLAN_WIRE: u16 = ETH_P_8021Q.to_be();
const QINQ_WIRE: u16 = ETH_P_8021AD.to_be();
/// IPv4's flags-and-fragment-offset, TTL and protocol word: the fragment
/// offset (13 bits) and the protocol byte, which must be 0 (the first or
/// only fragment) and TCP.
const FRAG_OFFSET_AND_PROTO: u32 = 0x1fff_00ffu32.to_be();
const FIRST_FRAGMENT_TCP: u32 = (IPPROTO_TCP as u32).to_be();

/// IPv4 without options, then the TCP header: one read. The IPv4 fields
/// are [`super::Ipv4Header`]'s, but those the screen tests together are
/// read as the word they share.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Ipv4Tcp {
    ver_ihl: u8,
    tos: u8,
    total_len: u16,
    id: u16,
    frag_ttl_proto: u32,
    check: u16,
    src: u32,
    dst: u32,
    tcp: TcpHeader,
}

/// IPv6 without extension headers, then the TCP header. The IPv6 fields
/// are [`super::Ipv6Header`]'s, but each address is two 64-bit words:
/// folding it for the pending slot then takes two loads, not four (and
/// fewer registers).
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Ipv6Tcp {
    ver_class_flow: u32,
    payload_len: u16,
    next: u8,
    hop_limit: u8,
    src: [u64; 2],
    dst: [u64; 2],
    tcp: TcpHeader,
}

/// The TCP header's length, for an ACK (ACK set, SYN and RST clear) whose
/// data offset the full parse accepts; whether it fits the IP payload is
/// the caller's test.
#[inline(always)]
fn ack_header_len(tcp: &TcpHeader) -> Option<u16> {
    if tcp.flags & (TCP_ACK | TCP_SYN | TCP_RST) != TCP_ACK {
        return None;
    }
    tcp.header_len()
}

/// The pending-filter slot of a frame that is an ACK-bearing TCP segment in
/// one of the usual layouts; `None` for anything else (see the module).
#[inline(always)]
pub fn ordinary_ack_slot<P: PacketView + ?Sized>(pkt: &P) -> Option<u32> {
    let outer = pkt.read::<u16>(12)?;
    // Untagged IPv4 first: most frames, and the fewest tests.
    if outer == IP_WIRE {
        return ipv4(pkt, 14);
    }
    let (ethertype, l3) = if outer == VLAN_WIRE || outer == QINQ_WIRE {
        (pkt.read::<u16>(16)?, 18)
    } else {
        (outer, 14)
    };
    match ethertype {
        IPV6_WIRE => ipv6(pkt, l3),
        IP_WIRE => ipv4(pkt, l3),
        _ => None,
    }
}

#[inline(always)]
fn ipv4<P: PacketView + ?Sized>(pkt: &P, l3: usize) -> Option<u32> {
    let h = pkt.read::<Ipv4Tcp>(l3)?;
    // Version 4 with a 20-byte header; the first (or only) fragment; TCP.
    if h.ver_ihl != 0x45 || h.frag_ttl_proto & FRAG_OFFSET_AND_PROTO != FIRST_FRAGMENT_TCP {
        return None;
    }
    let tcp = h.tcp;
    let len = ack_header_len(&tcp)?;
    // The IP header's 20 bytes and the TCP header's fit the total length
    // (20 + at most 60: no overflow).
    if u16::from_be(h.total_len) < 20 + len {
        return None;
    }
    Some(pending_slot_of_ports(h.src, h.dst, tcp.ports()))
}

#[inline(always)]
fn ipv6<P: PacketView + ?Sized>(pkt: &P, l3: usize) -> Option<u32> {
    let h = pkt.read::<Ipv6Tcp>(l3)?;
    let tcp = h.tcp;
    if h.next != IPPROTO_TCP || ack_header_len(&tcp)? > u16::from_be(h.payload_len) {
        return None;
    }
    let (src, dst) = (h.src, h.dst);
    Some(pending_slot_of_ports(fold(src), fold(dst), tcp.ports()))
}

/// The XOR of an IPv6 address's four 32-bit words, from its two 64-bit
/// halves (each half holds two of the words, whichever the byte order).
#[inline(always)]
const fn fold(addr: [u64; 2]) -> u32 {
    let half = addr[0] ^ addr[1];
    (half ^ (half >> 32)) as u32
}

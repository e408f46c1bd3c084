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
//! once. (B1, `cargo xtask bench`: an IPv4 data segment went from +12 ns
//! over an empty program to +8..+9, IPv6 from +14..+16 to +10; other frames
//! pay the screen's few tests, about 2 ns, before the full parse.)
//!
//! The contract, property-tested against the full parse: when the screen
//! returns `Some(slot)`, [`super::parse_ethernet`] reads the frame as a TCP
//! segment that [`crate::handshake::classify`] calls an ACK, and `slot` is
//! that segment's [`crate::pending::pending_slot_of`]. Any other frame,
//! including every malformed one, gives `None` and goes through the full
//! parse, which counts what it finds.

use super::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, Ipv4Header, PacketView, TCP_ACK, TCP_RST, TCP_SYN, TcpHeader,
};
use crate::pending::pending_slot_folded;

/// IPv4 without options, then the TCP header: one read.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Ipv4Tcp {
    ip: Ipv4Header,
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

/// What the full parse accepts and `classify` calls an ACK: a TCP header
/// length that the full parse accepts, ACK set, SYN and RST clear.
#[inline(always)]
fn is_ack_within(tcp: &TcpHeader, ip_payload: u16) -> bool {
    tcp.flags & (TCP_ACK | TCP_SYN | TCP_RST) == TCP_ACK && tcp.length_within(ip_payload).is_some()
}

/// The pending-filter slot of a frame that is an ACK-bearing TCP segment in
/// one of the usual layouts; `None` for anything else (see the module).
#[inline(always)]
pub fn ordinary_ack_slot<P: PacketView + ?Sized>(pkt: &P) -> Option<u32> {
    let outer = pkt.be16_at(12)?;
    let (ethertype, l3) = if outer == ETH_P_8021Q || outer == ETH_P_8021AD { (pkt.be16_at(16)?, 18) } else { (outer, 14) };
    match ethertype {
        ETH_P_IP => ipv4(pkt, l3),
        ETH_P_IPV6 => ipv6(pkt, l3),
        _ => None,
    }
}

#[inline(always)]
fn ipv4<P: PacketView + ?Sized>(pkt: &P, l3: usize) -> Option<u32> {
    let Ipv4Tcp { ip, tcp } = pkt.read::<Ipv4Tcp>(l3)?;
    let total_len = u16::from_be(ip.total_len);
    // Version 4 with a 20-byte header; TCP; not a non-first fragment.
    if ip.ver_ihl != 0x45 || ip.proto != IPPROTO_TCP || u16::from_be(ip.frag) & 0x1fff != 0 || total_len < 20 {
        return None;
    }
    if !is_ack_within(&tcp, total_len - 20) {
        return None;
    }
    Some(pending_slot_folded(ip.src, ip.dst, u16::from_be(tcp.src_port), u16::from_be(tcp.dst_port)))
}

#[inline(always)]
fn ipv6<P: PacketView + ?Sized>(pkt: &P, l3: usize) -> Option<u32> {
    let h = pkt.read::<Ipv6Tcp>(l3)?;
    let tcp = h.tcp;
    if h.next != IPPROTO_TCP || !is_ack_within(&tcp, u16::from_be(h.payload_len)) {
        return None;
    }
    let (src, dst) = (h.src, h.dst);
    Some(pending_slot_folded(fold(src), fold(dst), u16::from_be(tcp.src_port), u16::from_be(tcp.dst_port)))
}

/// The XOR of an IPv6 address's four 32-bit words, from its two 64-bit
/// halves (each half holds two of the words, whichever the byte order).
#[inline(always)]
const fn fold(addr: [u64; 2]) -> u32 {
    let half = addr[0] ^ addr[1];
    (half ^ (half >> 32)) as u32
}

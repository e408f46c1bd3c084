//! Frame parsing with constant bounds, in the manner of xdp-tools'
//! `parsing_helpers.h`: a cursor over a packet view and one small function
//! per header. The same code runs in the kernel (over `data..data_end`, where
//! every read is bounds-checked for the verifier) and on the host (over a
//! slice, for unit tests, property tests, fuzzing and replay).

use crate::counters::{Counter, Family};

pub mod screen;

/// Most VLAN tags we walk (802.1Q inside 802.1ad: QinQ).
pub const VLAN_MAX_DEPTH: usize = 2;
/// Most IPv6 extension headers we walk before giving up.
pub const IPV6_EXT_MAX_CHAIN: usize = 5;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_DSTOPTS: u8 = 60;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Read-only access to a frame's bytes. `read` returns `None` when the value
/// would extend past the end of the frame: that check is the one the
/// verifier needs on the kernel side.
pub trait PacketView {
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;

    #[inline(always)]
    fn u8_at(&self, offset: usize) -> Option<u8> {
        self.read::<u8>(offset)
    }

    #[inline(always)]
    fn be16_at(&self, offset: usize) -> Option<u16> {
        self.read::<u16>(offset).map(u16::from_be)
    }

    #[inline(always)]
    fn be32_at(&self, offset: usize) -> Option<u32> {
        self.read::<u32>(offset).map(u32::from_be)
    }
}

impl PacketView for [u8] {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let end = offset.checked_add(size_of::<T>())?;
        if end > self.len() {
            return None;
        }
        // SAFETY: `offset..end` is in bounds; the read is unaligned and `T`
        // is only ever a plain integer or array of integers here.
        Some(unsafe { self.as_ptr().add(offset).cast::<T>().read_unaligned() })
    }
}

/// Why a frame could not be read. Each reason has its own counter: a short
/// or garbled header is counted, never misread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    EthTruncated,
    VlanTruncated,
    TooManyVlans,
    Ipv4Truncated,
    Ipv4BadHeaderLength,
    Ipv6Truncated,
    Ipv6ExtTruncated,
    Ipv6ExtChainTooLong,
    TcpTruncated,
    TcpBadDataOffset,
}

impl ParseError {
    pub const fn counter(self) -> Counter {
        match self {
            Self::EthTruncated => Counter::ParseEthTruncated,
            Self::VlanTruncated => Counter::ParseVlanTruncated,
            Self::TooManyVlans => Counter::ParseTooManyVlans,
            Self::Ipv4Truncated => Counter::ParseIpv4Truncated,
            Self::Ipv4BadHeaderLength => Counter::ParseIpv4BadHeaderLength,
            Self::Ipv6Truncated => Counter::ParseIpv6Truncated,
            Self::Ipv6ExtTruncated => Counter::ParseIpv6ExtTruncated,
            Self::Ipv6ExtChainTooLong => Counter::ParseIpv6ExtChainTooLong,
            Self::TcpTruncated => Counter::ParseTcpTruncated,
            Self::TcpBadDataOffset => Counter::ParseTcpBadDataOffset,
        }
    }

    /// The `reason` label of `tcp_handshake_parse_errors_total`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::EthTruncated => "eth_truncated",
            Self::VlanTruncated => "vlan_truncated",
            Self::TooManyVlans => "too_many_vlans",
            Self::Ipv4Truncated => "ipv4_truncated",
            Self::Ipv4BadHeaderLength => "ipv4_bad_header_length",
            Self::Ipv6Truncated => "ipv6_truncated",
            Self::Ipv6ExtTruncated => "ipv6_ext_truncated",
            Self::Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
            Self::TcpTruncated => "tcp_truncated",
            Self::TcpBadDataOffset => "tcp_bad_data_offset",
        }
    }

    pub const ALL: [Self; 10] = [
        Self::EthTruncated,
        Self::VlanTruncated,
        Self::TooManyVlans,
        Self::Ipv4Truncated,
        Self::Ipv4BadHeaderLength,
        Self::Ipv6Truncated,
        Self::Ipv6ExtTruncated,
        Self::Ipv6ExtChainTooLong,
        Self::TcpTruncated,
        Self::TcpBadDataOffset,
    ];
}

/// The fields of a TCP segment the handshake logic needs.
///
/// `repr(C)`, bytes first, words last: the enums that carry a segment keep
/// their tag in the niche of `family` and a `ParseError` in the byte after
/// it, so no tag shares bytes with a port or an address. With Rust's own
/// layout one did, and LLVM built flow keys from byte-sized pieces of an
/// address (unaligned stack stores, which the verifier rejects once
/// misaligned packet loads are allowed). Aligned to 8, with the addresses
/// at offsets 16 and 32: LLVM copies an address in 8-byte loads, and a
/// segment on the stack at an offset of 4 mod 8 made those misaligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct TcpSegment {
    pub family: Family,
    pub flags: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP payload bytes, from the IP length fields.
    pub payload_len: u16,
    pub seq: u32,
    pub ack: u32,
    /// Raw network-order address words (IPv4: first word only).
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
    /// The receive window the segment advertises (never scaled on a SYN or
    /// a SYN-ACK: RFC 7323): how far past its ack a RST may land.
    pub window: u16,
    pub _pad: u16,
}

/// What a well-formed frame turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    Tcp(TcpSegment),
    /// Not IP, not TCP, or an IPv6 header chain we do not walk (ESP, unknown).
    NotTcp,
    /// A non-first fragment: no TCP header in it.
    Fragment,
}

/// Parses an Ethernet frame (up to [`VLAN_MAX_DEPTH`] VLAN tags).
#[inline(always)]
pub fn parse_ethernet<P: PacketView + ?Sized>(pkt: &P) -> Result<Parsed, ParseError> {
    let Some(mut ethertype) = pkt.be16_at(12) else {
        return Err(ParseError::EthTruncated);
    };
    let mut offset = ETH_HLEN;
    for _ in 0..VLAN_MAX_DEPTH {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // A tag is TCI (2 bytes) then the encapsulated ethertype.
        let Some(inner) = pkt.be16_at(offset + 2) else {
            return Err(ParseError::VlanTruncated);
        };
        ethertype = inner;
        offset += 4;
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(pkt, offset),
        ETH_P_IPV6 => parse_ipv6(pkt, offset),
        ETH_P_8021Q | ETH_P_8021AD => Err(ParseError::TooManyVlans),
        _ => Ok(Parsed::NotTcp),
    }
}

/// Parses a frame that starts with the IP header (raw-IP captures).
#[inline(always)]
pub fn parse_raw_ip<P: PacketView + ?Sized>(pkt: &P, offset: usize) -> Result<Parsed, ParseError> {
    match pkt.u8_at(offset).map(|b| b >> 4) {
        Some(4) => parse_ipv4(pkt, offset),
        Some(6) => parse_ipv6(pkt, offset),
        Some(_) => Ok(Parsed::NotTcp),
        None => Err(ParseError::Ipv4Truncated),
    }
}

/// IPv4 fixed header, as on the wire (multi-byte fields in network order).
/// Packed: headers sit at any offset in a frame (the IPv4 header starts 14
/// bytes in), and a packed struct's fields are read with plain, possibly
/// unaligned, loads (one `ldxw` per address in the kernel, where bpf-linker
/// allows misaligned access) instead of byte by byte.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Ipv4Header {
    ver_ihl: u8,
    tos: u8,
    total_len: u16,
    id: u16,
    frag: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    src: u32,
    dst: u32,
}

#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Ipv6Header {
    ver_class_flow: u32,
    payload_len: u16,
    next: u8,
    hop_limit: u8,
    src: [u32; 4],
    dst: [u32; 4],
}

/// TCP's fixed header. Both ports are one word: the pending slot takes
/// them as one, and the data-segment screen reads them with one load.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct TcpHeader {
    ports: u32,
    seq: u32,
    ack: u32,
    doff: u8,
    flags: u8,
    window: u16,
    check: u16,
    urgent: u16,
}

impl TcpHeader {
    /// The header's length in bytes, when it is at least the fixed 20.
    #[inline(always)]
    fn header_len(&self) -> Option<u16> {
        let len = u16::from(self.doff >> 4) * 4;
        (len >= 20).then_some(len)
    }

    /// [`TcpHeader::header_len`], when it also fits in the IP payload.
    #[inline(always)]
    fn length_within(&self, ip_payload: u16) -> Option<u16> {
        self.header_len().filter(|&len| len <= ip_payload)
    }

    /// Both ports in host order, the source port high.
    #[inline(always)]
    fn ports(&self) -> u32 {
        u32::from_be(self.ports)
    }
}

// Each header is read with one bounds check, as a whole, and its fields are
// taken from the copy. Reading fields one by one, each with its own check,
// lets LLVM merge the checks into selects that the verifier cannot follow.

#[inline(always)]
fn parse_ipv4<P: PacketView + ?Sized>(pkt: &P, offset: usize) -> Result<Parsed, ParseError> {
    let Some(ip) = pkt.read::<Ipv4Header>(offset) else {
        return Err(ParseError::Ipv4Truncated);
    };
    let header_len = u16::from(ip.ver_ihl & 0x0f) * 4;
    let total_len = u16::from_be(ip.total_len);
    if ip.ver_ihl >> 4 != 4 || header_len < 20 || total_len < header_len {
        return Err(ParseError::Ipv4BadHeaderLength);
    }
    if ip.proto != IPPROTO_TCP {
        return Ok(Parsed::NotTcp);
    }
    if u16::from_be(ip.frag) & 0x1fff != 0 {
        return Ok(Parsed::Fragment);
    }
    let src = [ip.src, 0, 0, 0];
    let dst = [ip.dst, 0, 0, 0];
    parse_tcp(
        pkt,
        offset + usize::from(header_len),
        Family::Ipv4,
        src,
        dst,
        total_len - header_len,
    )
}

#[inline(always)]
fn parse_ipv6<P: PacketView + ?Sized>(pkt: &P, offset: usize) -> Result<Parsed, ParseError> {
    let Some(ip) = pkt.read::<Ipv6Header>(offset) else {
        return Err(ParseError::Ipv6Truncated);
    };
    let payload_len = u16::from_be(ip.payload_len);
    let (src, dst) = (ip.src, ip.dst);
    let mut next = ip.next;
    let mut offset = offset + size_of::<Ipv6Header>();
    // Bytes of extension headers walked, to get the TCP payload length.
    let mut ext_len: u16 = 0;
    for _ in 0..IPV6_EXT_MAX_CHAIN {
        match next {
            IPPROTO_TCP => break,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Next header, then length in 8-byte units not counting the first.
                let Some([n, len]) = pkt.read::<[u8; 2]>(offset) else {
                    return Err(ParseError::Ipv6ExtTruncated);
                };
                let this = (u16::from(len) + 1) * 8;
                next = n;
                offset += usize::from(this);
                ext_len += this;
            }
            IPPROTO_FRAGMENT => {
                let Some([n, _, frag_hi, frag_lo]) = pkt.read::<[u8; 4]>(offset) else {
                    return Err(ParseError::Ipv6ExtTruncated);
                };
                if u16::from_be_bytes([frag_hi, frag_lo]) & 0xfff8 != 0 {
                    return Ok(Parsed::Fragment);
                }
                next = n;
                offset += 8;
                ext_len += 8;
            }
            // ESP, AH, no-next-header and anything unknown: stop.
            _ => return Ok(Parsed::NotTcp),
        }
    }
    match next {
        IPPROTO_TCP => parse_tcp(
            pkt,
            offset,
            Family::Ipv6,
            src,
            dst,
            payload_len.saturating_sub(ext_len),
        ),
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => {
            Err(ParseError::Ipv6ExtChainTooLong)
        }
        _ => Ok(Parsed::NotTcp),
    }
}

#[inline(always)]
fn parse_tcp<P: PacketView + ?Sized>(
    pkt: &P,
    offset: usize,
    family: Family,
    src_addr: [u32; 4],
    dst_addr: [u32; 4],
    ip_payload: u16,
) -> Result<Parsed, ParseError> {
    let Some(tcp) = pkt.read::<TcpHeader>(offset) else {
        return Err(ParseError::TcpTruncated);
    };
    let Some(header_len) = tcp.length_within(ip_payload) else {
        return Err(ParseError::TcpBadDataOffset);
    };
    Ok(Parsed::Tcp(TcpSegment {
        family,
        src_addr,
        dst_addr,
        src_port: (tcp.ports() >> 16) as u16,
        dst_port: tcp.ports() as u16,
        seq: u32::from_be(tcp.seq),
        ack: u32::from_be(tcp.ack),
        flags: tcp.flags,
        payload_len: ip_payload - header_len,
        window: u16::from_be(tcp.window),
        _pad: 0,
    }))
}

#[cfg(test)]
mod tests;

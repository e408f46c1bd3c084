//! Host tests of the parser: each header shape, truncation at every byte,
//! and property tests that arbitrary bytes never panic.
extern crate std;
use std::{vec, vec::Vec};

use proptest::prelude::*;

use super::*;

/// Minimal frame builder for these tests (the integration tests have a
/// fuller one).
struct Frame {
    vlans: Vec<u16>,
    ipv6_ext: Vec<(u8, Vec<u8>)>,
    ipv4_options: usize,
    v6: bool,
    flags: u8,
    doff: u8,
    payload: usize,
    frag_offset: u16,
}

impl Default for Frame {
    fn default() -> Self {
        Self {
            vlans: Vec::new(),
            ipv6_ext: Vec::new(),
            ipv4_options: 0,
            v6: false,
            flags: TCP_SYN,
            doff: 5,
            payload: 0,
            frag_offset: 0,
        }
    }
}

impl Frame {
    fn tcp(&self) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&40000u16.to_be_bytes());
        t.extend_from_slice(&80u16.to_be_bytes());
        t.extend_from_slice(&1000u32.to_be_bytes());
        t.extend_from_slice(&2000u32.to_be_bytes());
        t.push(self.doff << 4);
        t.push(self.flags);
        t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        let opts = usize::from(self.doff.max(5)) * 4 - 20;
        t.extend(std::iter::repeat_n(1u8, opts));
        t.extend(std::iter::repeat_n(0xabu8, self.payload));
        t
    }

    fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid = if i == 0 && self.vlans.len() > 1 { ETH_P_8021AD } else { ETH_P_8021Q };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        let tcp = self.tcp();
        if self.v6 {
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            let ext: usize = self.ipv6_ext.iter().map(|(_, b)| b.len() + 2).sum();
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&((ext + tcp.len()) as u16).to_be_bytes());
            let first = self.ipv6_ext.first().map_or(IPPROTO_TCP, |(n, _)| *n);
            f.push(first);
            f.push(64);
            f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            for (i, (kind, body)) in self.ipv6_ext.iter().enumerate() {
                let next = self.ipv6_ext.get(i + 1).map_or(IPPROTO_TCP, |(n, _)| *n);
                f.push(next);
                if *kind == IPPROTO_FRAGMENT {
                    f.push(0);
                } else {
                    f.push(((body.len() + 2) / 8 - 1) as u8);
                }
                f.extend_from_slice(body);
            }
        } else {
            f.extend_from_slice(&ETH_P_IP.to_be_bytes());
            let ihl = 5 + self.ipv4_options / 4;
            let total = ihl * 4 + tcp.len();
            f.push(0x40 | ihl as u8);
            f.push(0);
            f.extend_from_slice(&(total as u16).to_be_bytes());
            f.extend_from_slice(&[0, 1]);
            f.extend_from_slice(&self.frag_offset.to_be_bytes());
            f.extend_from_slice(&[64, IPPROTO_TCP, 0, 0]);
            f.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
            f.extend(std::iter::repeat_n(1u8, self.ipv4_options));
        }
        f.extend_from_slice(&tcp);
        f
    }
}

fn tcp(frame: &[u8]) -> TcpSegment {
    match parse_ethernet(frame) {
        Ok(Parsed::Tcp(seg)) => seg,
        other => panic!("expected TCP, got {other:?}"),
    }
}

#[test]
fn ipv4_syn() {
    let seg = tcp(&Frame::default().build());
    assert_eq!(seg.family, Family::Ipv4);
    assert_eq!(
        (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags),
        (40000, 80, 1000, 2000, TCP_SYN)
    );
    assert_eq!(seg.src_addr[0].to_ne_bytes(), [198, 18, 0, 1]);
    assert_eq!(seg.dst_addr, [u32::from_ne_bytes([198, 18, 0, 2]), 0, 0, 0]);
    assert_eq!(seg.payload_len, 0);
}

#[test]
fn ipv4_options_and_payload() {
    let seg = tcp(&Frame { ipv4_options: 12, payload: 33, doff: 8, ..Frame::default() }.build());
    assert_eq!(seg.payload_len, 33);
    assert_eq!(seg.dst_port, 80);
}

#[test]
fn vlan_and_qinq() {
    assert_eq!(tcp(&Frame { vlans: vec![100], ..Frame::default() }.build()).dst_port, 80);
    let qinq = Frame { vlans: vec![100, 200], v6: true, ..Frame::default() };
    assert_eq!(tcp(&qinq.build()).family, Family::Ipv6);
    let three = Frame { vlans: vec![1, 2, 3], ..Frame::default() }.build();
    assert_eq!(parse_ethernet(&three[..]), Err(ParseError::TooManyVlans));
}

#[test]
fn ipv6_each_extension_header() {
    for kind in [IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT] {
        let f = Frame { v6: true, payload: 5, ipv6_ext: vec![(kind, vec![0; 6])], ..Frame::default() };
        let seg = tcp(&f.build());
        assert_eq!((seg.family, seg.dst_port, seg.payload_len), (Family::Ipv6, 80, 5), "ext {kind}");
    }
    // A longer option header (16 bytes) and a chain of four.
    let chain = vec![
        (IPPROTO_HOPOPTS, vec![0; 14]),
        (IPPROTO_DSTOPTS, vec![0; 6]),
        (IPPROTO_ROUTING, vec![0; 6]),
        (IPPROTO_FRAGMENT, vec![0; 6]),
    ];
    let seg = tcp(&Frame { v6: true, ipv6_ext: chain, payload: 3, ..Frame::default() }.build());
    assert_eq!((seg.dst_port, seg.payload_len), (80, 3));
}

#[test]
fn ipv6_chain_too_long_and_esp() {
    let chain = vec![(IPPROTO_DSTOPTS, vec![0; 6]); IPV6_EXT_MAX_CHAIN + 1];
    let f = Frame { v6: true, ipv6_ext: chain, ..Frame::default() }.build();
    assert_eq!(parse_ethernet(&f[..]), Err(ParseError::Ipv6ExtChainTooLong));
    let max = vec![(IPPROTO_DSTOPTS, vec![0; 6]); IPV6_EXT_MAX_CHAIN];
    assert_eq!(tcp(&Frame { v6: true, ipv6_ext: max, ..Frame::default() }.build()).dst_port, 80);
    let esp = Frame { v6: true, ipv6_ext: vec![(50, vec![0; 6])], ..Frame::default() }.build();
    assert_eq!(parse_ethernet(&esp[..]), Ok(Parsed::NotTcp));
}

#[test]
fn fragments() {
    let non_first = Frame { frag_offset: 0x0010, ..Frame::default() }.build();
    assert_eq!(parse_ethernet(&non_first[..]), Ok(Parsed::Fragment));
    // First fragment (more-fragments bit set, offset 0) still has TCP.
    assert_eq!(tcp(&Frame { frag_offset: 0x2000, ..Frame::default() }.build()).dst_port, 80);
    let frag = |bytes: [u8; 6]| Frame { v6: true, ipv6_ext: vec![(IPPROTO_FRAGMENT, bytes.to_vec())], ..Frame::default() };
    assert_eq!(parse_ethernet(&frag([0, 0x08, 0, 0, 0, 1]).build()[..]), Ok(Parsed::Fragment));
    assert_eq!(tcp(&frag([0, 0x01, 0, 0, 0, 1]).build()).dst_port, 80, "offset 0 with M set");
}

#[test]
fn bad_data_offset() {
    let f = Frame { doff: 4, ..Frame::default() }.build();
    assert_eq!(parse_ethernet(&f[..]), Err(ParseError::TcpBadDataOffset));
    // Data offset beyond the IP payload.
    let mut f = Frame::default().build();
    f[14 + 20 + 12] = 15 << 4;
    assert_eq!(parse_ethernet(&f[..]), Err(ParseError::TcpBadDataOffset));
}

#[test]
fn bad_ipv4_header_length() {
    let mut f = Frame::default().build();
    f[14] = 0x44;
    assert_eq!(parse_ethernet(&f[..]), Err(ParseError::Ipv4BadHeaderLength));
}

#[test]
fn not_ip_is_not_tcp() {
    let mut f = Frame::default().build();
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(parse_ethernet(&f[..]), Ok(Parsed::NotTcp));
    let mut f = Frame::default().build();
    f[14 + 9] = 17;
    assert_eq!(parse_ethernet(&f[..]), Ok(Parsed::NotTcp));
}

/// Every prefix of a valid frame is an error naming the header it stops in.
#[test]
fn truncation_at_every_byte() {
    let v6_ext = Frame { v6: true, ipv6_ext: vec![(IPPROTO_HOPOPTS, vec![0; 6])], ..Frame::default() };
    let cases: [(Frame, &[(usize, ParseError)]); 3] = [
        (
            Frame::default(),
            &[(14, ParseError::EthTruncated), (34, ParseError::Ipv4Truncated), (54, ParseError::TcpTruncated)],
        ),
        (
            Frame { vlans: vec![7, 8], ..Frame::default() },
            &[
                (14, ParseError::EthTruncated),
                (22, ParseError::VlanTruncated),
                (42, ParseError::Ipv4Truncated),
                (62, ParseError::TcpTruncated),
            ],
        ),
        (
            v6_ext,
            &[
                (14, ParseError::EthTruncated),
                (54, ParseError::Ipv6Truncated),
                (56, ParseError::Ipv6ExtTruncated),
                // The rest of the extension header is skipped, not read: a cut
                // inside it shows up as a short TCP header.
                (82, ParseError::TcpTruncated),
            ],
        ),
    ];
    for (frame, bounds) in cases {
        let bytes = frame.build();
        for len in 0..bytes.len() {
            let expected = bounds.iter().find(|(end, _)| len < *end).map(|(_, e)| *e);
            assert_eq!(parse_ethernet(&bytes[..len]).err(), expected, "len {len}");
        }
        assert!(matches!(parse_ethernet(&bytes[..]), Ok(Parsed::Tcp(_))));
    }
}

proptest! {
    /// Arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_ethernet(&bytes[..]);
        let _ = parse_raw_ip(&bytes[..], 0);
    }

    #[test]
    fn built_frames_round_trip(vlans in proptest::collection::vec(1u16..4095, 0..=2), v6: bool,
                               payload in 0usize..64, opts in 0usize..=10, flags: u8) {
        let f = Frame { vlans, v6, payload, ipv4_options: opts * 4, flags, ..Frame::default() };
        let seg = tcp(&f.build());
        prop_assert_eq!(usize::from(seg.payload_len), payload);
        prop_assert_eq!(seg.flags, flags);
        prop_assert_eq!(seg.family, if v6 { Family::Ipv6 } else { Family::Ipv4 });
    }

    /// Trailing bytes after the IP datagram (Ethernet padding) change nothing.
    #[test]
    fn ethernet_padding_is_ignored(pad in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut bytes = Frame::default().build();
        let clean = tcp(&bytes);
        bytes.extend_from_slice(&pad);
        prop_assert_eq!(tcp(&bytes), clean);
    }
}

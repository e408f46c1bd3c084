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
            let tpid = if i == 0 && self.vlans.len() > 1 {
                ETH_P_8021AD
            } else {
                ETH_P_8021Q
            };
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
    let seg = tcp(&Frame {
        ipv4_options: 12,
        payload: 33,
        doff: 8,
        ..Frame::default()
    }
    .build());
    assert_eq!(seg.payload_len, 33);
    assert_eq!(seg.dst_port, 80);
}

#[test]
fn vlan_and_qinq() {
    assert_eq!(
        tcp(&Frame {
            vlans: vec![100],
            ..Frame::default()
        }
        .build())
        .dst_port,
        80
    );
    let qinq = Frame {
        vlans: vec![100, 200],
        v6: true,
        ..Frame::default()
    };
    assert_eq!(tcp(&qinq.build()).family, Family::Ipv6);
    let three = Frame {
        vlans: vec![1, 2, 3],
        ..Frame::default()
    }
    .build();
    assert_eq!(parse_ethernet(&three[..]), Err(ParseError::TooManyVlans));
}

#[test]
fn ipv6_each_extension_header() {
    for kind in [
        IPPROTO_HOPOPTS,
        IPPROTO_ROUTING,
        IPPROTO_DSTOPTS,
        IPPROTO_FRAGMENT,
    ] {
        let f = Frame {
            v6: true,
            payload: 5,
            ipv6_ext: vec![(kind, vec![0; 6])],
            ..Frame::default()
        };
        let seg = tcp(&f.build());
        assert_eq!(
            (seg.family, seg.dst_port, seg.payload_len),
            (Family::Ipv6, 80, 5),
            "ext {kind}"
        );
    }
    // A longer option header (16 bytes) and a chain of four.
    let chain = vec![
        (IPPROTO_HOPOPTS, vec![0; 14]),
        (IPPROTO_DSTOPTS, vec![0; 6]),
        (IPPROTO_ROUTING, vec![0; 6]),
        (IPPROTO_FRAGMENT, vec![0; 6]),
    ];
    let seg = tcp(&Frame {
        v6: true,
        ipv6_ext: chain,
        payload: 3,
        ..Frame::default()
    }
    .build());
    assert_eq!((seg.dst_port, seg.payload_len), (80, 3));
}

#[test]
fn ipv6_chain_too_long_and_esp() {
    let chain = vec![(IPPROTO_DSTOPTS, vec![0; 6]); IPV6_EXT_MAX_CHAIN + 1];
    let f = Frame {
        v6: true,
        ipv6_ext: chain,
        ..Frame::default()
    }
    .build();
    assert_eq!(parse_ethernet(&f[..]), Err(ParseError::Ipv6ExtChainTooLong));
    let max = vec![(IPPROTO_DSTOPTS, vec![0; 6]); IPV6_EXT_MAX_CHAIN];
    assert_eq!(
        tcp(&Frame {
            v6: true,
            ipv6_ext: max,
            ..Frame::default()
        }
        .build())
        .dst_port,
        80
    );
    let esp = Frame {
        v6: true,
        ipv6_ext: vec![(50, vec![0; 6])],
        ..Frame::default()
    }
    .build();
    assert_eq!(parse_ethernet(&esp[..]), Ok(Parsed::NotTcp));
}

#[test]
fn fragments() {
    let non_first = Frame {
        frag_offset: 0x0010,
        ..Frame::default()
    }
    .build();
    assert_eq!(parse_ethernet(&non_first[..]), Ok(Parsed::Fragment));
    // First fragment (more-fragments bit set, offset 0) still has TCP.
    assert_eq!(
        tcp(&Frame {
            frag_offset: 0x2000,
            ..Frame::default()
        }
        .build())
        .dst_port,
        80
    );
    let frag = |bytes: [u8; 6]| Frame {
        v6: true,
        ipv6_ext: vec![(IPPROTO_FRAGMENT, bytes.to_vec())],
        ..Frame::default()
    };
    assert_eq!(
        parse_ethernet(&frag([0, 0x08, 0, 0, 0, 1]).build()[..]),
        Ok(Parsed::Fragment)
    );
    assert_eq!(
        tcp(&frag([0, 0x01, 0, 0, 0, 1]).build()).dst_port,
        80,
        "offset 0 with M set"
    );
}

#[test]
fn bad_data_offset() {
    let f = Frame {
        doff: 4,
        ..Frame::default()
    }
    .build();
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
    let v6_ext = Frame {
        v6: true,
        ipv6_ext: vec![(IPPROTO_HOPOPTS, vec![0; 6])],
        ..Frame::default()
    };
    let cases: [(Frame, &[(usize, ParseError)]); 3] = [
        (
            Frame::default(),
            &[
                (14, ParseError::EthTruncated),
                (34, ParseError::Ipv4Truncated),
                (54, ParseError::TcpTruncated),
            ],
        ),
        (
            Frame {
                vlans: vec![7, 8],
                ..Frame::default()
            },
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

// The data-segment screen (`screen::ordinary_ack_slot`): it must agree with
// the full parse whenever it answers, and answer for the layouts it covers.

mod screen {
    use super::*;
    use crate::{
        handshake::{SegmentKind, classify},
        parse::screen::ordinary_ack_slot,
        pending::pending_slot_of,
    };

    /// The screen's contract: `Some(slot)` only for a frame the full parse
    /// reads as an ACK-classified TCP segment, and then its pending slot.
    fn agrees(bytes: &[u8]) -> Result<(), TestCaseError> {
        let Some(slot) = ordinary_ack_slot(bytes) else {
            return Ok(());
        };
        let parsed = parse_ethernet(bytes);
        let Ok(Parsed::Tcp(seg)) = parsed else {
            return Err(TestCaseError::fail(std::format!(
                "screen said {slot}, full parse {parsed:?}"
            )));
        };
        prop_assert_eq!(classify(seg.flags), SegmentKind::Ack);
        let ipv4 = seg.family == Family::Ipv4;
        prop_assert_eq!(
            slot,
            pending_slot_of(
                ipv4,
                &seg.src_addr,
                &seg.dst_addr,
                seg.src_port,
                seg.dst_port
            )
        );
        Ok(())
    }

    fn ack_segment() -> Frame {
        Frame {
            flags: TCP_ACK | TCP_PSH,
            payload: 100,
            ..Frame::default()
        }
    }

    /// Ethernet with no tag or one (802.1Q, or 802.1ad alone), then IPv4
    /// without options or IPv6 without extension headers: every ACK-bearing
    /// flag combination is screened, every other one is not.
    #[test]
    fn covers_the_usual_layouts() {
        for v6 in [false, true] {
            for tags in [0, 1, 2] {
                let mut base = Frame {
                    v6,
                    vlans: vec![100; tags.min(1)],
                    ..ack_segment()
                }
                .build();
                if tags == 2 {
                    // One 802.1ad tag on its own.
                    base[12..14].copy_from_slice(&ETH_P_8021AD.to_be_bytes());
                }
                for flags in 0..=u8::MAX {
                    let mut bytes = base.clone();
                    let flags_at = bytes.len() - 100 - 7;
                    bytes[flags_at] = flags;
                    let seg = tcp(&bytes);
                    assert_eq!(seg.flags, flags);
                    let screened = ordinary_ack_slot(&bytes[..]);
                    assert_eq!(
                        screened.is_some(),
                        classify(flags) == SegmentKind::Ack,
                        "v6 {v6}, tags {tags}, flags {flags:#x}"
                    );
                    if let Err(e) = agrees(&bytes) {
                        panic!("v6 {v6}, tags {tags}, flags {flags:#x}: {e}");
                    }
                }
            }
        }
    }

    /// Layouts with a field at a variable offset, and malformed headers, are
    /// left to the full parse (which counts the errors).
    #[test]
    fn leaves_the_rest_to_the_full_parse() {
        let left = [
            (
                "ipv4 options",
                Frame {
                    ipv4_options: 8,
                    ..ack_segment()
                },
            ),
            (
                "ipv6 extension header",
                Frame {
                    v6: true,
                    ipv6_ext: vec![(IPPROTO_HOPOPTS, vec![0; 6])],
                    ..ack_segment()
                },
            ),
            (
                "QinQ",
                Frame {
                    vlans: vec![10, 20],
                    ..ack_segment()
                },
            ),
            (
                "non-first fragment",
                Frame {
                    frag_offset: 0x0010,
                    ..ack_segment()
                },
            ),
            (
                "data offset 4",
                Frame {
                    doff: 4,
                    ..ack_segment()
                },
            ),
        ];
        for (name, frame) in left {
            assert_eq!(ordinary_ack_slot(&frame.build()[..]), None, "{name}");
        }
        let mut past_payload = Frame {
            flags: TCP_ACK,
            ..Frame::default()
        }
        .build();
        past_payload[14 + 20 + 12] = 6 << 4;
        assert_eq!(
            parse_ethernet(&past_payload[..]),
            Err(ParseError::TcpBadDataOffset)
        );
        assert_eq!(
            ordinary_ack_slot(&past_payload[..]),
            None,
            "data offset past the IP payload"
        );
        let mut not_tcp = ack_segment().build();
        not_tcp[14 + 9] = 17;
        assert_eq!(ordinary_ack_slot(&not_tcp[..]), None, "UDP");
        let mut bad_ihl = ack_segment().build();
        bad_ihl[14] = 0x44;
        assert_eq!(ordinary_ack_slot(&bad_ihl[..]), None, "IHL 4");
        let mut v6_short = Frame {
            v6: true,
            ..ack_segment()
        }
        .build();
        v6_short[18..20].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            ordinary_ack_slot(&v6_short[..]),
            None,
            "IPv6 payload shorter than the TCP header"
        );
        // A frame cut anywhere before the end of the TCP header.
        for (v6, end) in [(false, 14 + 20 + 20), (true, 14 + 40 + 20)] {
            let bytes = Frame {
                v6,
                flags: TCP_ACK,
                ..Frame::default()
            }
            .build();
            assert_eq!(bytes.len(), end);
            for len in 0..end {
                assert_eq!(
                    ordinary_ack_slot(&bytes[..len]),
                    None,
                    "v6 {v6}, cut at {len}"
                );
            }
            assert!(ordinary_ack_slot(&bytes[..]).is_some());
        }
    }

    /// Every single byte of every covered layout's headers set to every
    /// value: whatever the screen answers, the full parse agrees.
    #[test]
    fn every_one_byte_change_agrees() {
        for v6 in [false, true] {
            for tags in [0, 1] {
                let frame = Frame {
                    v6,
                    vlans: vec![100; tags],
                    flags: TCP_ACK,
                    payload: 2,
                    ..Frame::default()
                }
                .build();
                for at in 0..frame.len() {
                    for value in 0..=u8::MAX {
                        let mut bytes = frame.clone();
                        bytes[at] = value;
                        if let Err(e) = agrees(&bytes) {
                            panic!("v6 {v6}, tags {tags}, byte {at} = {value:#x}: {e}");
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_agree_with_the_full_parse(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            agrees(&bytes)?;
        }

        /// Valid frames of every shape, then up to four bytes of their
        /// headers overwritten: the screen still answers only when the full
        /// parse agrees.
        #[test]
        fn damaged_frames_agree_with_the_full_parse(
            vlans in proptest::collection::vec(1u16..4095, 0..=2), v6: bool, opts in 0usize..=2, flags: u8,
            payload in 0usize..8, damage in proptest::collection::vec((0usize..80, any::<u8>()), 0..=4),
        ) {
            let mut bytes = Frame { vlans, v6, ipv4_options: opts * 4, flags, payload, ..Frame::default() }.build();
            agrees(&bytes)?;
            for (at, value) in damage {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
                agrees(&bytes)?;
            }
        }
    }
}

//! The table of packet sequences and their exact outcomes, shared by the
//! kernel tests (run with BPF_PROG_TEST_RUN) and the replay tests (written to
//! captures and replayed).
use std::net::IpAddr;

use handshake_common::counters::{Counter, Direction, Family};

use crate::packet::{ACK, Ext, FIN, PSH, Packet, RST, SYN};

/// Where a frame is fed in: the XDP program (arriving) or the TC program
/// (leaving).
#[derive(Clone, Debug)]
pub enum Step {
    In(Packet),
    Out(Packet),
    /// A raw ingress frame (for truncated or garbled bytes).
    InRaw(Vec<u8>),
}

use Counter as C;
pub use Step::{In, InRaw, Out};

pub const X: u32 = 1_000_000;
pub const Y: u32 = 0xffff_fff0; // y+1 does not wrap, y+16 does
pub const INBOUND: Direction = Direction::Inbound;
pub const OUTBOUND: Direction = Direction::Outbound;

pub fn v4(last: u8) -> IpAddr {
    IpAddr::from([198, 18, 0, last])
}

pub fn v6(last: u16) -> IpAddr {
    IpAddr::from([0x2001, 2, 0, 0, 0, 0, 0, last])
}

/// Remote client -> local server, IPv4.
pub fn client() -> Packet {
    Packet::tcp(v4(1), 40000, v4(2), 80)
}

pub fn client6() -> Packet {
    Packet::tcp(v6(1), 40000, v6(2), 443)
}

pub fn syn(p: &Packet, isn: u32) -> Packet {
    p.clone().flags(SYN).seq(isn)
}

pub fn synack(p: &Packet, y: u32, ack: u32) -> Packet {
    p.reply().flags(SYN | ACK).seq(y).ack(ack)
}

pub fn ack(p: &Packet, seq: u32, ack: u32) -> Packet {
    p.clone().flags(ACK).seq(seq).ack(ack)
}

/// The three segments of a good inbound handshake of `p`.
/// `p`'s SYN (ISN `X`) as raw bytes, with `bytes` written over the frame
/// at `at`: a header no builder option makes.
pub fn patched_syn(p: &Packet, at: usize, bytes: &[u8]) -> Step {
    let mut frame = syn(p, X).build();
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    InRaw(frame)
}

pub fn handshake(p: &Packet) -> Vec<Step> {
    vec![
        In(syn(p, X)),
        Out(synack(p, Y, X + 1)),
        In(ack(p, X + 1, Y + 1)),
    ]
}

pub struct Case {
    pub name: &'static str,
    pub steps: Vec<Step>,
    /// Exact non-zero counters (all but `packets`); everything else is 0.
    pub expect: Vec<(Family, Direction, Counter, u64)>,
    /// Entries left in the flow table.
    pub flows: usize,
}

/// The counters of one inbound handshake, completed.
pub fn complete(family: Family) -> Vec<(Family, Direction, Counter, u64)> {
    completed(family, INBOUND)
}

/// The counters of one handshake in `direction`, completed.
pub fn completed(family: Family, direction: Direction) -> Vec<(Family, Direction, Counter, u64)> {
    vec![
        (family, direction, C::SynPackets, 1),
        (family, direction, C::Attempts, 1),
        (family, direction, C::SynAck, 1),
        (family, direction, C::Completed, 1),
    ]
}

pub fn with(
    mut base: Vec<(Family, Direction, Counter, u64)>,
    extra: &[(Family, Direction, Counter, u64)],
) -> Vec<(Family, Direction, Counter, u64)> {
    base.extend_from_slice(extra);
    base
}

pub const V4: Family = Family::Ipv4;
pub const V6: Family = Family::Ipv6;

pub fn cases() -> Vec<Case> {
    let c = client();
    let c6 = client6();
    let started = |f: Family| vec![(f, INBOUND, C::SynPackets, 1), (f, INBOUND, C::Attempts, 1)];
    let answered = |f: Family| with(started(f), &[(f, INBOUND, C::SynAck, 1)]);
    vec![
        Case {
            name: "ipv4 handshake",
            steps: handshake(&c),
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "ipv6 handshake",
            steps: handshake(&c6),
            expect: complete(V6),
            flows: 0,
        },
        Case {
            name: "ipv4 options (40 bytes)",
            steps: handshake(&c.clone().ipv4_options(40)),
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "802.1Q",
            steps: handshake(&c.clone().vlan(100)),
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "QinQ ipv6",
            steps: handshake(&c6.clone().qinq(10, 20)),
            expect: complete(V6),
            flows: 0,
        },
        Case {
            name: "ipv6 hop-by-hop",
            steps: handshake(&c6.clone().ext(Ext::HopByHop(1))),
            expect: complete(V6),
            flows: 0,
        },
        Case {
            name: "ipv6 routing",
            steps: handshake(&c6.clone().ext(Ext::Routing(0))),
            expect: complete(V6),
            flows: 0,
        },
        Case {
            name: "ipv6 destination options",
            steps: handshake(&c6.clone().ext(Ext::DestOpts(2))),
            expect: complete(V6),
            flows: 0,
        },
        Case {
            name: "ipv6 first fragment",
            steps: handshake(&c6.clone().ext(Ext::Fragment {
                offset: 0,
                more: true,
            })),
            expect: complete(V6),
            flows: 0,
        },
        Case {
            name: "ipv6 chain of four",
            steps: handshake(
                &c6.clone()
                    .ext(Ext::HopByHop(0))
                    .ext(Ext::DestOpts(0))
                    .ext(Ext::Routing(0))
                    .ext(Ext::Fragment {
                        offset: 0,
                        more: false,
                    }),
            ),
            expect: complete(V6),
            flows: 0,
        },
        Case {
            name: "ipv6 chain too long",
            steps: vec![In(syn(
                &(0..6).fold(c6.clone(), |p, _| p.ext(Ext::DestOpts(0))),
                X,
            ))],
            expect: vec![(V4, INBOUND, C::ParseIpv6ExtChainTooLong, 1)],
            flows: 0,
        },
        Case {
            name: "ipv6 ESP stops the walk",
            steps: vec![In(syn(&c6.clone().ext(Ext::Other(50)), X))],
            expect: vec![],
            flows: 0,
        },
        Case {
            name: "ipv4 non-first fragment",
            steps: vec![In(syn(&c.clone().fragment(10, false), X))],
            expect: vec![(V4, INBOUND, C::Fragments, 1)],
            flows: 0,
        },
        Case {
            name: "ipv6 non-first fragment",
            steps: vec![In(syn(
                &c6.clone().ext(Ext::Fragment {
                    offset: 3,
                    more: true,
                }),
                X,
            ))],
            expect: vec![(V4, INBOUND, C::Fragments, 1)],
            flows: 0,
        },
        Case {
            name: "ipv4 first fragment",
            steps: handshake(&c.clone().fragment(0, true)),
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "tcp options on every segment",
            steps: handshake(&c.clone().tcp_options(&[
                2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
            ])),
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "data offset below 5",
            steps: vec![In(syn(&c.clone().data_offset(4), X))],
            expect: vec![(V4, INBOUND, C::ParseTcpBadDataOffset, 1)],
            flows: 0,
        },
        Case {
            name: "data offset past the packet",
            steps: vec![In(syn(&c.clone().data_offset(15), X))],
            expect: vec![(V4, INBOUND, C::ParseTcpBadDataOffset, 1)],
            flows: 0,
        },
        Case {
            name: "three VLAN tags",
            steps: vec![In(syn(&c.clone().vlan(1).vlan(2).vlan(3), X))],
            expect: vec![(V4, INBOUND, C::ParseTooManyVlans, 1)],
            flows: 0,
        },
        Case {
            name: "bad ipv4 header length",
            steps: vec![patched_syn(&c, 14, &[0x43])],
            expect: vec![(V4, INBOUND, C::ParseIpv4BadHeaderLength, 1)],
            flows: 0,
        },
        Case {
            name: "not tcp (ARP)",
            steps: vec![patched_syn(&c, 12, &0x0806u16.to_be_bytes())],
            expect: vec![],
            flows: 0,
        },
        Case {
            name: "retransmitted SYN",
            steps: vec![
                In(syn(&c, X)),
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                In(ack(&c, X + 1, Y + 1)),
            ],
            expect: with(
                complete(V4),
                &[
                    (V4, INBOUND, C::SynPackets, 1),
                    (V4, INBOUND, C::RetransmitSyn, 1),
                ],
            ),
            flows: 0,
        },
        Case {
            name: "retransmitted SYN-ACK",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                Out(synack(&c, Y, X + 1)),
                In(ack(&c, X + 1, Y + 1)),
            ],
            expect: with(complete(V4), &[(V4, INBOUND, C::RetransmitSynAck, 1)]),
            flows: 0,
        },
        Case {
            name: "same SYN seen at a second hook",
            steps: vec![In(syn(&c, X)), Out(syn(&c, X))],
            expect: with(
                started(V4),
                &[
                    (V4, OUTBOUND, C::SynPackets, 1),
                    (V4, OUTBOUND, C::DuplicateObservation, 1),
                ],
            ),
            flows: 1,
        },
        Case {
            name: "RST+ACK answering the SYN: rejected",
            steps: vec![In(syn(&c, X)), Out(c.reply().flags(RST | ACK).ack(X + 1))],
            expect: with(started(V4), &[(V4, INBOUND, C::Rejected, 1)]),
            flows: 0,
        },
        Case {
            name: "connect() retried with its ISN after each RST: one attempt",
            steps: (0..3)
                .flat_map(|_| [In(syn(&c, X)), Out(c.reply().flags(RST | ACK).ack(X + 1))])
                .collect(),
            expect: with(
                started(V4),
                &[
                    (V4, INBOUND, C::SynPackets, 2),
                    (V4, INBOUND, C::RetransmitSyn, 2),
                    (V4, INBOUND, C::Rejected, 1),
                ],
            ),
            flows: 0,
        },
        Case {
            name: "a completed handshake seen twice: one handshake",
            steps: [handshake(&c), handshake(&c)].concat(),
            expect: with(
                complete(V4),
                &[
                    (V4, INBOUND, C::SynPackets, 1),
                    (V4, INBOUND, C::RetransmitSyn, 1),
                    (V4, INBOUND, C::RetransmitSynAck, 1),
                ],
            ),
            flows: 0,
        },
        Case {
            name: "SYN-ACK retransmitted after the final ACK: not unsolicited",
            steps: [
                handshake(&c),
                vec![Out(synack(&c, Y, X + 1)), In(ack(&c, X + 1, Y + 1))],
            ]
            .concat(),
            expect: with(complete(V4), &[(V4, INBOUND, C::RetransmitSynAck, 1)]),
            flows: 0,
        },
        Case {
            name: "a new ISN after a completed handshake: a new attempt",
            steps: [
                handshake(&c),
                vec![
                    In(syn(&c, X + 9000)),
                    Out(synack(&c, Y, X + 9001)),
                    In(ack(&c, X + 9001, Y + 1)),
                ],
            ]
            .concat(),
            expect: with(complete(V4), &complete(V4)),
            flows: 0,
        },
        Case {
            name: "a SYN-ACK after a rejection: unsolicited",
            steps: vec![
                In(syn(&c, X)),
                Out(c.reply().flags(RST | ACK).ack(X + 1)),
                Out(synack(&c, Y, X + 1)),
            ],
            expect: with(
                started(V4),
                &[
                    (V4, INBOUND, C::Rejected, 1),
                    (V4, INBOUND, C::Unsolicited, 1),
                ],
            ),
            flows: 0,
        },
        Case {
            name: "RST answering the SYN with a wrong ack: invalid",
            steps: vec![In(syn(&c, X)), Out(c.reply().flags(RST | ACK).ack(X + 2))],
            expect: with(started(V4), &[(V4, INBOUND, C::InvalidRst, 1)]),
            flows: 1,
        },
        Case {
            name: "client RST after its SYN: aborted",
            steps: vec![In(syn(&c, X)), In(c.clone().flags(RST).seq(X + 1))],
            expect: with(started(V4), &[(V4, INBOUND, C::Aborted, 1)]),
            flows: 0,
        },
        Case {
            name: "server RST after its SYN-ACK: aborted",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                Out(c.reply().flags(RST).seq(Y + 1)),
            ],
            expect: with(answered(V4), &[(V4, INBOUND, C::Aborted, 1)]),
            flows: 0,
        },
        Case {
            name: "client RST after the SYN-ACK: aborted",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                In(c.clone().flags(RST).seq(X + 1)),
            ],
            expect: with(answered(V4), &[(V4, INBOUND, C::Aborted, 1)]),
            flows: 0,
        },
        Case {
            name: "client RST inside the SYN-ACK's window: aborted",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                In(c.clone().flags(RST).seq(X + 1 + 30_000)),
            ],
            expect: with(answered(V4), &[(V4, INBOUND, C::Aborted, 1)]),
            flows: 0,
        },
        Case {
            name: "client RST past the SYN-ACK's window: invalid",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                In(c.clone().flags(RST).seq(X + 1 + 64_241)),
            ],
            expect: with(answered(V4), &[(V4, INBOUND, C::InvalidRst, 1)]),
            flows: 1,
        },
        Case {
            name: "a SYN-ACK with data, and the ACK acknowledging it",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1).payload(10)),
                In(ack(&c, X + 1, Y + 1 + 10)),
            ],
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "port reuse: a new ISN is a new attempt",
            steps: vec![
                In(syn(&c, X)),
                In(syn(&c, X + 5000)),
                Out(synack(&c, Y, X + 5001)),
                In(ack(&c, X + 5001, Y + 1)),
            ],
            expect: with(
                complete(V4),
                &[
                    (V4, INBOUND, C::SynPackets, 1),
                    (V4, INBOUND, C::Attempts, 1),
                    (V4, INBOUND, C::SupersededSynSent, 1),
                ],
            ),
            flows: 0,
        },
        Case {
            name: "SYN-ACK with a bad ack leaves the flow in syn_sent",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X)),
                Out(synack(&c, Y, X + 1)),
                In(ack(&c, X + 1, Y + 1)),
            ],
            expect: with(complete(V4), &[(V4, INBOUND, C::InvalidSynAckAck, 1)]),
            flows: 0,
        },
        Case {
            name: "SYN-ACK with a changed ISN",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                Out(synack(&c, Y + 7, X + 1)),
                In(ack(&c, X + 1, Y + 1)),
            ],
            expect: with(complete(V4), &[(V4, INBOUND, C::InvalidSynAckSeq, 1)]),
            flows: 0,
        },
        Case {
            name: "final ACK with a bad ack, then the right one",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                In(ack(&c, X + 1, Y + 2)),
                In(ack(&c, X + 1, Y + 1)),
            ],
            expect: with(complete(V4), &[(V4, INBOUND, C::InvalidAckAck, 1)]),
            flows: 0,
        },
        Case {
            name: "final ACK with a bad seq",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                In(ack(&c, X + 2, Y + 1)),
            ],
            expect: with(answered(V4), &[(V4, INBOUND, C::InvalidAckSeq, 1)]),
            flows: 1,
        },
        Case {
            name: "ACK before any SYN-ACK is not a handshake segment",
            steps: vec![In(syn(&c, X)), In(ack(&c, X + 1, Y + 1))],
            expect: started(V4),
            flows: 1,
        },
        Case {
            name: "unsolicited SYN-ACK (backscatter)",
            steps: vec![In(synack(&c.reply(), Y, X + 1))],
            expect: vec![(V4, OUTBOUND, C::Unsolicited, 1)],
            flows: 0,
        },
        Case {
            name: "wrapping sequence numbers",
            steps: vec![
                In(syn(&c, u32::MAX)),
                Out(synack(&c, u32::MAX, 0)),
                In(ack(&c, 0, 0)),
            ],
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "TCP Fast Open: data on the SYN, accepted",
            steps: vec![
                In(syn(&c, X).payload(100)),
                Out(synack(&c, Y, X + 101)),
                In(ack(&c, X + 101, Y + 1)),
            ],
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "TCP Fast Open: data on the SYN, not accepted",
            steps: vec![
                In(syn(&c, X).payload(100)),
                Out(synack(&c, Y, X + 1)),
                In(ack(&c, X + 1, Y + 1).payload(100).flags(ACK | PSH)),
            ],
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "data on the final ACK",
            steps: vec![
                In(syn(&c, X)),
                Out(synack(&c, Y, X + 1)),
                In(ack(&c, X + 1, Y + 1).payload(500).flags(ACK | PSH)),
            ],
            expect: complete(V4),
            flows: 0,
        },
        Case {
            name: "simultaneous open",
            // Both ends send a SYN; each answers the other's with a SYN-ACK
            // (its own ISN again), then each ACKs.
            steps: vec![
                Out(Packet::tcp(v4(2), 5000, v4(1), 6000).flags(SYN).seq(Y)),
                In(Packet::tcp(v4(1), 6000, v4(2), 5000).flags(SYN).seq(X)),
                Out(Packet::tcp(v4(2), 5000, v4(1), 6000)
                    .flags(SYN | ACK)
                    .seq(Y)
                    .ack(X + 1)),
                In(Packet::tcp(v4(1), 6000, v4(2), 5000)
                    .flags(SYN | ACK)
                    .seq(X)
                    .ack(Y + 1)),
                Out(Packet::tcp(v4(2), 5000, v4(1), 6000)
                    .flags(ACK)
                    .seq(Y + 1)
                    .ack(X + 1)),
                In(Packet::tcp(v4(1), 6000, v4(2), 5000)
                    .flags(ACK)
                    .seq(X + 1)
                    .ack(Y + 1)),
            ],
            expect: with(completed(V4, INBOUND), &completed(V4, OUTBOUND)),
            flows: 0,
        },
        Case {
            name: "outbound handshake",
            steps: vec![
                Out(Packet::tcp(v4(2), 50000, v4(1), 22).flags(SYN).seq(X)),
                In(Packet::tcp(v4(1), 22, v4(2), 50000)
                    .flags(SYN | ACK)
                    .seq(Y)
                    .ack(X + 1)),
                Out(Packet::tcp(v4(2), 50000, v4(1), 22)
                    .flags(ACK)
                    .seq(X + 1)
                    .ack(Y + 1)),
            ],
            expect: completed(V4, OUTBOUND),
            flows: 0,
        },
        Case {
            name: "FIN and data segments of other flows touch nothing",
            steps: vec![
                In(c.clone().flags(FIN | ACK).seq(5).ack(6)),
                In(c.clone().flags(ACK | PSH).seq(5).ack(6).payload(1000)),
                Out(c.reply().flags(ACK).seq(6).ack(1005)),
            ],
            expect: vec![],
            flows: 0,
        },
    ]
}

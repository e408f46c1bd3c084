//! Table-driven tests of the real programs on crafted frames
//! (BPF_PROG_TEST_RUN): each case is a packet sequence, ingress or egress,
//! and the exact counters and flow-table size it must leave behind. Every
//! verdict must be pass.
use std::net::IpAddr;

use handshake_common::{
    counters::{Counter, Direction, Family},
    flow::Stage,
    histogram::Leg,
    listener::{ListenerCounters, OTHER_PORT},
};
use handshake_tests::{
    packet::{ACK, Ext, FIN, PSH, Packet, RST, SYN},
    tester::{TC_NEXT, Tester, XDP_PASS},
};
use handshake_user::probe::LoadOptions;

/// Where a frame is fed in: the XDP program (arriving) or the TC program
/// (leaving).
#[derive(Clone, Debug)]
enum Step {
    In(Packet),
    Out(Packet),
    /// A raw ingress frame (for truncated or garbled bytes).
    InRaw(Vec<u8>),
}

use Counter as C;
use Step::{In, InRaw, Out};

const X: u32 = 1_000_000;
const Y: u32 = 0xffff_fff0; // y+1 does not wrap, y+16 does
const INBOUND: Direction = Direction::Inbound;
const OUTBOUND: Direction = Direction::Outbound;

fn v4(last: u8) -> IpAddr {
    IpAddr::from([198, 18, 0, last])
}

fn v6(last: u16) -> IpAddr {
    IpAddr::from([0x2001, 2, 0, 0, 0, 0, 0, last])
}

/// Remote client -> local server, IPv4.
fn client() -> Packet {
    Packet::tcp(v4(1), 40000, v4(2), 80)
}

fn client6() -> Packet {
    Packet::tcp(v6(1), 40000, v6(2), 443)
}

fn syn(p: &Packet, isn: u32) -> Packet {
    p.clone().flags(SYN).seq(isn)
}

fn synack(p: &Packet, y: u32, ack: u32) -> Packet {
    p.reply().flags(SYN | ACK).seq(y).ack(ack)
}

fn ack(p: &Packet, seq: u32, ack: u32) -> Packet {
    p.clone().flags(ACK).seq(seq).ack(ack)
}

/// The three segments of a good inbound handshake of `p`.
fn handshake(p: &Packet) -> Vec<Step> {
    vec![In(syn(p, X)), Out(synack(p, Y, X + 1)), In(ack(p, X + 1, Y + 1))]
}

struct Case {
    name: &'static str,
    steps: Vec<Step>,
    /// Exact non-zero counters (all but `packets`); everything else is 0.
    expect: Vec<(Family, Direction, Counter, u64)>,
    /// Entries left in the flow table.
    flows: usize,
}

fn complete(family: Family) -> Vec<(Family, Direction, Counter, u64)> {
    vec![
        (family, INBOUND, C::SynPackets, 1),
        (family, INBOUND, C::Attempts, 1),
        (family, INBOUND, C::SynAck, 1),
        (family, INBOUND, C::Completed, 1),
    ]
}

fn with(mut base: Vec<(Family, Direction, Counter, u64)>, extra: &[(Family, Direction, Counter, u64)]) -> Vec<(Family, Direction, Counter, u64)> {
    base.extend_from_slice(extra);
    base
}

const V4: Family = Family::Ipv4;
const V6: Family = Family::Ipv6;

fn cases() -> Vec<Case> {
    let c = client();
    let c6 = client6();
    let started = |f: Family| vec![(f, INBOUND, C::SynPackets, 1), (f, INBOUND, C::Attempts, 1)];
    let answered = |f: Family| with(started(f), &[(f, INBOUND, C::SynAck, 1)]);
    vec![
        Case { name: "ipv4 handshake", steps: handshake(&c), expect: complete(V4), flows: 0 },
        Case { name: "ipv6 handshake", steps: handshake(&c6), expect: complete(V6), flows: 0 },
        Case { name: "ipv4 options (40 bytes)", steps: handshake(&c.clone().ipv4_options(40)), expect: complete(V4), flows: 0 },
        Case { name: "802.1Q", steps: handshake(&c.clone().vlan(100)), expect: complete(V4), flows: 0 },
        Case { name: "QinQ ipv6", steps: handshake(&c6.clone().qinq(10, 20)), expect: complete(V6), flows: 0 },
        Case { name: "ipv6 hop-by-hop", steps: handshake(&c6.clone().ext(Ext::HopByHop(1))), expect: complete(V6), flows: 0 },
        Case { name: "ipv6 routing", steps: handshake(&c6.clone().ext(Ext::Routing(0))), expect: complete(V6), flows: 0 },
        Case { name: "ipv6 destination options", steps: handshake(&c6.clone().ext(Ext::DestOpts(2))), expect: complete(V6), flows: 0 },
        Case {
            name: "ipv6 first fragment",
            steps: handshake(&c6.clone().ext(Ext::Fragment { offset: 0, more: true })),
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
                    .ext(Ext::Fragment { offset: 0, more: false }),
            ),
            expect: complete(V6),
            flows: 0,
        },
        Case {
            name: "ipv6 chain too long",
            steps: vec![In(syn(&(0..6).fold(c6.clone(), |p, _| p.ext(Ext::DestOpts(0))), X))],
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
            steps: vec![In(syn(&c6.clone().ext(Ext::Fragment { offset: 3, more: true }), X))],
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
            steps: handshake(&c.clone().tcp_options(&[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7])),
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
            steps: vec![InRaw({
                let mut f = syn(&c, X).build();
                f[14] = 0x43;
                f
            })],
            expect: vec![(V4, INBOUND, C::ParseIpv4BadHeaderLength, 1)],
            flows: 0,
        },
        Case {
            name: "not tcp (ARP)",
            steps: vec![InRaw({
                let mut f = syn(&c, X).build();
                f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
                f
            })],
            expect: vec![],
            flows: 0,
        },
        Case {
            name: "retransmitted SYN",
            steps: vec![In(syn(&c, X)), In(syn(&c, X)), Out(synack(&c, Y, X + 1)), In(ack(&c, X + 1, Y + 1))],
            expect: with(complete(V4), &[(V4, INBOUND, C::SynPackets, 1), (V4, INBOUND, C::RetransmitSyn, 1)]),
            flows: 0,
        },
        Case {
            name: "retransmitted SYN-ACK",
            steps: vec![In(syn(&c, X)), Out(synack(&c, Y, X + 1)), Out(synack(&c, Y, X + 1)), In(ack(&c, X + 1, Y + 1))],
            expect: with(complete(V4), &[(V4, INBOUND, C::RetransmitSynAck, 1)]),
            flows: 0,
        },
        Case {
            name: "same SYN seen at a second hook",
            steps: vec![In(syn(&c, X)), Out(syn(&c, X))],
            expect: with(started(V4), &[(V4, OUTBOUND, C::SynPackets, 1), (V4, OUTBOUND, C::DuplicateObservation, 1)]),
            flows: 1,
        },
        Case {
            name: "RST+ACK answering the SYN: rejected",
            steps: vec![In(syn(&c, X)), Out(c.reply().flags(RST | ACK).ack(X + 1))],
            expect: with(started(V4), &[(V4, INBOUND, C::Rejected, 1)]),
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
            steps: vec![In(syn(&c, X)), Out(synack(&c, Y, X + 1)), Out(c.reply().flags(RST).seq(Y + 1))],
            expect: with(answered(V4), &[(V4, INBOUND, C::Aborted, 1)]),
            flows: 0,
        },
        Case {
            name: "client RST after the SYN-ACK: aborted",
            steps: vec![In(syn(&c, X)), Out(synack(&c, Y, X + 1)), In(c.clone().flags(RST).seq(X + 1))],
            expect: with(answered(V4), &[(V4, INBOUND, C::Aborted, 1)]),
            flows: 0,
        },
        Case {
            name: "port reuse: a new ISN is a new attempt",
            steps: vec![In(syn(&c, X)), In(syn(&c, X + 5000)), Out(synack(&c, Y, X + 5001)), In(ack(&c, X + 5001, Y + 1))],
            expect: with(complete(V4), &[
                (V4, INBOUND, C::SynPackets, 1),
                (V4, INBOUND, C::Attempts, 1),
                (V4, INBOUND, C::SupersededSynSent, 1),
            ]),
            flows: 0,
        },
        Case {
            name: "SYN-ACK with a bad ack leaves the flow in syn_sent",
            steps: vec![In(syn(&c, X)), Out(synack(&c, Y, X)), Out(synack(&c, Y, X + 1)), In(ack(&c, X + 1, Y + 1))],
            expect: with(complete(V4), &[(V4, INBOUND, C::InvalidSynAckAck, 1)]),
            flows: 0,
        },
        Case {
            name: "SYN-ACK with a changed ISN",
            steps: vec![In(syn(&c, X)), Out(synack(&c, Y, X + 1)), Out(synack(&c, Y + 7, X + 1)), In(ack(&c, X + 1, Y + 1))],
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
            steps: vec![In(syn(&c, X)), Out(synack(&c, Y, X + 1)), In(ack(&c, X + 2, Y + 1))],
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
            steps: vec![In(syn(&c, u32::MAX)), Out(synack(&c, u32::MAX, 0)), In(ack(&c, 0, 0))],
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
            steps: vec![In(syn(&c, X)), Out(synack(&c, Y, X + 1)), In(ack(&c, X + 1, Y + 1).payload(500).flags(ACK | PSH))],
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
                Out(Packet::tcp(v4(2), 5000, v4(1), 6000).flags(SYN | ACK).seq(Y).ack(X + 1)),
                In(Packet::tcp(v4(1), 6000, v4(2), 5000).flags(SYN | ACK).seq(X).ack(Y + 1)),
                Out(Packet::tcp(v4(2), 5000, v4(1), 6000).flags(ACK).seq(Y + 1).ack(X + 1)),
                In(Packet::tcp(v4(1), 6000, v4(2), 5000).flags(ACK).seq(X + 1).ack(Y + 1)),
            ],
            expect: vec![
                (V4, INBOUND, C::SynPackets, 1),
                (V4, INBOUND, C::Attempts, 1),
                (V4, INBOUND, C::SynAck, 1),
                (V4, INBOUND, C::Completed, 1),
                (V4, OUTBOUND, C::SynPackets, 1),
                (V4, OUTBOUND, C::Attempts, 1),
                (V4, OUTBOUND, C::SynAck, 1),
                (V4, OUTBOUND, C::Completed, 1),
            ],
            flows: 0,
        },
        Case {
            name: "outbound handshake",
            steps: vec![
                Out(Packet::tcp(v4(2), 50000, v4(1), 22).flags(SYN).seq(X)),
                In(Packet::tcp(v4(1), 22, v4(2), 50000).flags(SYN | ACK).seq(Y).ack(X + 1)),
                Out(Packet::tcp(v4(2), 50000, v4(1), 22).flags(ACK).seq(X + 1).ack(Y + 1)),
            ],
            expect: vec![
                (V4, OUTBOUND, C::SynPackets, 1),
                (V4, OUTBOUND, C::Attempts, 1),
                (V4, OUTBOUND, C::SynAck, 1),
                (V4, OUTBOUND, C::Completed, 1),
            ],
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

fn run(tester: &mut Tester, steps: &[Step]) -> Result<(), String> {
    for (i, step) in steps.iter().enumerate() {
        match step {
            In(p) => {
                let verdict = tester.ingress(&p.build());
                if verdict != XDP_PASS {
                    return Err(format!("step {i}: XDP verdict {verdict}, not XDP_PASS"));
                }
            }
            InRaw(bytes) => {
                let verdict = tester.ingress(bytes);
                if verdict != XDP_PASS {
                    return Err(format!("step {i}: XDP verdict {verdict}, not XDP_PASS"));
                }
            }
            Out(p) => {
                let verdict = tester.egress(&p.build());
                if verdict != TC_NEXT {
                    return Err(format!("step {i}: TC verdict {verdict}, not TC_ACT_UNSPEC"));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn packet_sequences_leave_exact_counters() {
    let mut failures = Vec::new();
    for case in cases() {
        let mut tester = Tester::new();
        if let Err(e) = run(&mut tester, &case.steps) {
            failures.push(format!("{}: {e}", case.name));
            continue;
        }
        let counters = tester.counters();
        let mut expected = case.expect.clone();
        // Merge duplicates (a counter listed twice adds up).
        expected.sort_by_key(|(f, d, c, _)| (*f as u8, *d as u8, *c as u32));
        let mut merged: Vec<(Family, Direction, Counter, u64)> = Vec::new();
        for e in expected {
            match merged.last_mut() {
                Some(last) if (last.0, last.1, last.2) == (e.0, e.1, e.2) => last.3 += e.3,
                _ => merged.push(e),
            }
        }
        let mut got = counters.nonzero();
        got.sort_by_key(|(f, d, c, _)| (*f as u8, *d as u8, *c as u32));
        if got != merged {
            failures.push(format!("{}:\n    expected {merged:?}\n    got      {got:?}", case.name));
        }
        let packets = counters.total(Counter::Packets);
        if packets != case.steps.len() as u64 {
            failures.push(format!("{}: packets counted {packets}, frames sent {}", case.name, case.steps.len()));
        }
        let flows = tester.flows();
        if flows.len() != case.flows {
            failures.push(format!("{}: {} flows left, expected {}", case.name, flows.len(), case.flows));
        }
        // The pending filter counts exactly the flows left in syn_received.
        let syn_received = flows.iter().filter(|(_, s)| s.stage == Stage::SynReceived as u8).count() as u64;
        let pending = tester.probe().pending_total().expect("read the pending filter");
        if pending != syn_received {
            failures.push(format!("{}: pending filter {pending}, flows in syn_received {syn_received}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// Every prefix of a VLAN-tagged IPv6 SYN with an extension header, cut at
/// each header boundary and inside each header, is a parse error naming the
/// header, never a misread, and every verdict is pass.
#[test]
fn truncation_at_every_header_boundary() {
    let frame = syn(&client6().vlan(7).ext(Ext::HopByHop(0)), X).build();
    // 14 Ethernet, 4 VLAN, 40 IPv6, 8 hop-by-hop, 20 TCP.
    let bounds = [
        (14, C::ParseEthTruncated),
        (18, C::ParseVlanTruncated),
        (58, C::ParseIpv6Truncated),
        (60, C::ParseIpv6ExtTruncated),
        (86, C::ParseTcpTruncated),
    ];
    assert_eq!(frame.len(), 86);
    let mut tester = Tester::new();
    // The kernel refuses test runs below an Ethernet header; from there on,
    // every length.
    for len in 14..frame.len() {
        let before = tester.counters();
        assert_eq!(tester.ingress(&frame[..len]), XDP_PASS);
        let after = tester.counters();
        let expected = bounds.iter().find(|(end, _)| len < *end).map(|(_, c)| *c).expect("a bound");
        assert_eq!(
            after.total(expected) - before.total(expected),
            1,
            "cut at {len}: expected {expected:?}, got {:?}",
            after.nonzero()
        );
    }
    assert_eq!(tester.counters().total(C::Attempts), 0);
    assert!(tester.flows().is_empty());
    // IPv4 with options: cut inside the options is an IPv4 error? No: the
    // fixed header is complete, the TCP header is not.
    let v4 = syn(&client().ipv4_options(8), X).build();
    for (len, counter) in [(20, C::ParseIpv4Truncated), (33, C::ParseIpv4Truncated), (34, C::ParseTcpTruncated), (61, C::ParseTcpTruncated)] {
        let before = tester.counters().total(counter);
        tester.ingress(&v4[..len]);
        assert_eq!(tester.counters().total(counter) - before, 1, "ipv4 cut at {len}");
    }
}

#[test]
fn latency_is_recorded_once_per_leg() {
    let mut tester = Tester::new();
    run(&mut tester, &handshake(&client())).expect("run");
    assert_eq!(tester.latency_count(INBOUND, Leg::SynToSynAck), 1);
    assert_eq!(tester.latency_count(INBOUND, Leg::SynAckToAck), 1);
    // A retransmitted SYN-ACK is not a second sample.
    let c = Packet::tcp(v4(9), 1234, v4(2), 80);
    run(&mut tester, &[In(syn(&c, 1)), Out(synack(&c, 2, 2)), Out(synack(&c, 2, 2))]).expect("run");
    assert_eq!(tester.latency_count(INBOUND, Leg::SynToSynAck), 2);
    assert_eq!(tester.latency_count(INBOUND, Leg::SynAckToAck), 1);
}

/// With a budget of 3 inserts per window, a burst of 10 new SYNs is counted
/// in full, 3 are tracked and 7 reported untracked; a tracked one still
/// completes.
#[test]
fn insert_budget_bounds_new_flows_and_counts_the_rest() {
    let options = LoadOptions { syn_insert_budget: 3, syn_insert_window_ns: 3_600_000_000_000, ..LoadOptions::default() };
    let mut tester = Tester::with(&options);
    let clients: Vec<Packet> = (0..10).map(|i| Packet::tcp(v4(10 + i), 30000, v4(2), 80)).collect();
    let steps: Vec<Step> = clients.iter().map(|c| In(syn(c, X))).collect();
    run(&mut tester, &steps).expect("run");
    let counters = tester.counters();
    assert_eq!(counters.get(V4, INBOUND, C::SynPackets), 10);
    assert_eq!(counters.get(V4, INBOUND, C::Attempts), 10);
    assert_eq!(counters.get(V4, INBOUND, C::SynUntracked), 7);
    assert_eq!(tester.flows().len(), 3);
    // The first three were tracked: the first completes.
    run(&mut tester, &[Out(synack(&clients[0], Y, X + 1)), In(ack(&clients[0], X + 1, Y + 1))]).expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::Completed), 1);
    // Port reuse on a tracked flow replaces in place: not charged.
    run(&mut tester, &[In(syn(&clients[1], X + 99))]).expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::SynUntracked), 7);
    assert_eq!(tester.counters().get(V4, INBOUND, C::SupersededSynSent), 1);
}

/// Inbound handshakes are counted per local server port for the ports the
/// agent tracks, and under port 0 ("other") for the rest; outbound ones are
/// not listeners' business.
#[test]
fn listener_funnels_are_exact_and_bounded() {
    let mut tester = Tester::new();
    tester.probe().track_listener_ports(&[80, 443]).expect("track ports");
    let a = Packet::tcp(v4(1), 1001, v4(2), 80);
    let b = Packet::tcp(v4(3), 1002, v4(2), 80);
    let refused = Packet::tcp(v4(4), 1003, v4(2), 80);
    let aborted = Packet::tcp(v4(5), 1004, v4(2), 80);
    let other = Packet::tcp(v4(6), 1005, v4(2), 8080);
    let mut steps = handshake(&a);
    steps.extend(handshake(&b));
    steps.extend([In(syn(&refused, X)), Out(refused.reply().flags(RST | ACK).ack(X + 1))]);
    steps.extend([In(syn(&aborted, X)), Out(synack(&aborted, Y, X + 1)), In(aborted.clone().flags(RST).seq(X + 1))]);
    steps.extend(handshake(&other));
    // Outbound, to a remote port 80: not a local listener's.
    steps.extend([Out(Packet::tcp(v4(2), 5555, v4(9), 80).flags(SYN).seq(X))]);
    run(&mut tester, &steps).expect("run");
    let funnels = tester.probe().listeners().expect("read listeners");
    let port = |p: u16| funnels.iter().find(|(q, _)| *q == p).map(|(_, c)| *c);
    assert_eq!(port(80), Some(ListenerCounters { attempts: 4, synack: 3, completed: 2, rejected: 1, aborted: 1 }));
    assert_eq!(port(443), Some(ListenerCounters::default()));
    assert_eq!(port(OTHER_PORT), Some(ListenerCounters { attempts: 1, synack: 1, completed: 1, rejected: 0, aborted: 0 }));
    assert_eq!(funnels.len(), 3, "the kernel never adds ports: {funnels:?}");
    // Tracking a port again keeps its counts.
    tester.probe().track_listener_ports(&[80]).expect("track again");
    assert_eq!(tester.probe().listeners().expect("read")[1].1.completed, 2);
}

/// Data segments of flows with nothing pending take the filter's fast path
/// and change nothing; a final ACK whose slot is shared with another pending
/// flow still completes exactly once.
#[test]
fn pending_filter_never_hides_a_final_ack() {
    let mut tester = Tester::new();
    let flows: Vec<Packet> = (0..200).map(|i| Packet::tcp(v4(1), 20000 + i, v4(2), 80)).collect();
    let mut steps = Vec::new();
    for f in &flows {
        steps.extend([In(syn(f, X)), Out(synack(f, Y, X + 1))]);
    }
    run(&mut tester, &steps).expect("run");
    assert_eq!(tester.probe().pending_total().expect("pending"), 200);
    // Data on unrelated flows: no effect.
    let data: Vec<Step> = (0..200).map(|i| In(Packet::tcp(v4(7), 30000 + i, v4(2), 80).flags(ACK | PSH).seq(5).ack(6).payload(100))).collect();
    run(&mut tester, &data).expect("run");
    let finals: Vec<Step> = flows.iter().map(|f| In(ack(f, X + 1, Y + 1))).collect();
    run(&mut tester, &finals).expect("run");
    let counters = tester.counters();
    assert_eq!(counters.get(V4, INBOUND, C::Completed), 200);
    assert_eq!(tester.probe().pending_total().expect("pending"), 0);
    assert!(tester.flows().is_empty());
}

/// Pins the calling thread to CPU 0: the insert budget is per CPU, and a
/// test that migrates mid-way would see two budgets.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; we set one bit and pass its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0, "pin to CPU 0");
    }
}

/// A random-source SYN flood of 20x the table's capacity: every SYN is
/// counted, the insert budget keeps the flood from evicting the real
/// clients' entries, and all their handshakes complete. Without the budget
/// the same flood evicts them all.
#[test]
fn real_clients_survive_a_random_source_flood() {
    let flood: Vec<Vec<u8>> = (0..20_480u32)
        .map(|i| {
            let src = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
            syn(&Packet::tcp(src, 1024 + (i % 60000) as u16, v4(2), 80), i.wrapping_mul(2_654_435_761)).build()
        })
        .collect();
    let real: Vec<Packet> = (0..10).map(|i| Packet::tcp(v4(100 + i), 40000, v4(2), 80)).collect();
    let run_flood = |budget: u64| -> (Tester, u64) {
        pin_to_cpu0();
        let options = LoadOptions {
            flow_table_size: 1024,
            syn_insert_budget: budget,
            syn_insert_window_ns: 3_600_000_000_000,
            ..LoadOptions::default()
        };
        let mut tester = Tester::with(&options);
        let opening: Vec<Step> = real.iter().map(|c| In(syn(c, X))).collect();
        run(&mut tester, &opening).expect("run");
        for frame in &flood {
            assert_eq!(tester.ingress(frame), XDP_PASS);
        }
        let mut closing = Vec::new();
        for c in &real {
            closing.extend([Out(synack(c, Y, X + 1)), In(ack(c, X + 1, Y + 1))]);
        }
        run(&mut tester, &closing).expect("run");
        let completed = tester.counters().get(V4, INBOUND, C::Completed);
        (tester, completed)
    };

    let (guarded, completed) = run_flood(512);
    let counters = guarded.counters();
    assert_eq!(counters.get(V4, INBOUND, C::SynPackets), 20_490);
    assert_eq!(counters.get(V4, INBOUND, C::Attempts), 20_490);
    assert_eq!(counters.get(V4, INBOUND, C::SynUntracked), 20_490 - 512);
    assert_eq!(completed, 10, "every real client completes");
    assert_eq!(guarded.flows().len(), 512 - 10, "the tracked part of the flood is still there");

    let (_, completed) = run_flood(u64::MAX);
    assert_eq!(completed, 0, "with no budget the flood evicts the real clients' entries");
}

/// The agent's timeout path: handshakes stuck in each stage are freed and
/// counted by stage, the pending filter drops back, and a request naming an
/// older attempt than the one in the table changes nothing.
#[test]
fn expire_frees_and_counts_by_stage() {
    let mut tester = Tester::new();
    let stuck_syn = Packet::tcp(v4(1), 1111, v4(2), 80);
    let stuck_synack = Packet::tcp(v4(1), 2222, v4(2), 80);
    run(&mut tester, &[In(syn(&stuck_syn, X)), In(syn(&stuck_synack, X)), Out(synack(&stuck_synack, Y, X + 1))]).expect("run");
    let flows = tester.flows();
    assert_eq!(flows.len(), 2);
    assert_eq!(tester.probe().pending_total().expect("pending"), 1);
    for (key, state) in &flows {
        assert!(!tester.expire(key, state.syn_ns + 1), "another attempt's time: left alone");
    }
    assert_eq!(tester.flows().len(), 2);
    for (key, state) in &flows {
        assert!(tester.expire(key, state.syn_ns));
        assert!(!tester.expire(key, state.syn_ns), "already gone");
    }
    let counters = tester.counters();
    assert_eq!(counters.get(V4, INBOUND, C::TimeoutSynSent), 1);
    assert_eq!(counters.get(V4, INBOUND, C::TimeoutSynReceived), 1);
    assert!(tester.flows().is_empty());
    assert_eq!(tester.probe().pending_total().expect("pending"), 0);
}

/// The batched flow-table read the agent uses agrees with a one-by-one walk,
/// across several batches.
#[test]
fn batched_scan_matches_iteration() {
    let mut tester = Tester::new();
    let steps: Vec<Step> = (0..5000u32)
        .map(|i| In(syn(&Packet::tcp(IpAddr::from([198, 18, (i >> 8) as u8, i as u8]), 1000, v4(2), 80), i)))
        .collect();
    run(&mut tester, &steps).expect("run");
    let mut walked = tester.flows();
    let mut batched = tester.probe().flows().expect("batched scan");
    walked.sort_by_key(|(k, _)| (k.src_addr, k.src_port));
    batched.sort_by_key(|(k, _)| (k.src_addr, k.src_port));
    assert_eq!(batched.len(), 5000);
    assert_eq!(batched, walked);
}

/// An interface given a slot has its own counters; the rest share slot 0.
#[test]
fn interface_slots_separate_counters() {
    let mut tester = Tester::new();
    // BPF_PROG_TEST_RUN runs on this namespace's loopback device.
    let lo = std::fs::read_to_string("/sys/class/net/lo/ifindex").expect("lo").trim().parse::<u32>().expect("ifindex");
    run(&mut tester, &handshake(&client())).expect("run");
    tester.probe().set_iface_slot(lo, 5).expect("set slot");
    assert_eq!(tester.probe().iface_slots().expect("slots"), vec![(lo, 5)]);
    run(&mut tester, &handshake(&Packet::tcp(v4(3), 3333, v4(2), 80))).expect("run");
    let counters = tester.counters();
    assert_eq!(counters.in_slot(0, V4, INBOUND, C::Completed), 1);
    assert_eq!(counters.in_slot(5, V4, INBOUND, C::Completed), 1);
    assert_eq!(counters.in_slot(5, V4, INBOUND, C::Packets), 2, "two frames arrived after the slot was set");
}

/// Loaded for replay, the programs take the time from the map: latencies are
/// exactly the differences of the times set.
#[test]
fn replay_clock_drives_latency() {
    let mut tester = Tester::with(&LoadOptions { clock_from_map: true, ..LoadOptions::default() });
    let c = client();
    let at = |t: &mut Tester, ns: u64| t.probe().set_replay_clock(ns).expect("set clock");
    at(&mut tester, 1_000_000);
    run(&mut tester, &[In(syn(&c, X))]).expect("run");
    at(&mut tester, 1_002_000);
    run(&mut tester, &[Out(synack(&c, Y, X + 1))]).expect("run");
    at(&mut tester, 1_009_000);
    run(&mut tester, &[In(ack(&c, X + 1, Y + 1))]).expect("run");
    assert_eq!(tester.latency_sum_ns(INBOUND, Leg::SynToSynAck), 2_000);
    assert_eq!(tester.latency_sum_ns(INBOUND, Leg::SynAckToAck), 7_000);
    assert_eq!(tester.latency_bucket(INBOUND, Leg::SynToSynAck, 1), 1, "2 µs <= 2 µs");
    assert_eq!(tester.latency_bucket(INBOUND, Leg::SynAckToAck, 3), 1, "7 µs <= 8 µs");
}

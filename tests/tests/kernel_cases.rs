//! Table-driven tests of the real programs on crafted frames
//! (BPF_PROG_TEST_RUN): each case is a packet sequence, ingress or egress,
//! and the exact counters and flow-table size it must leave behind. Every
//! verdict must be pass.
use std::net::IpAddr;

use handshake_common::{
    counters::{Counter, Direction, Family},
    expire::ENDED_LINGER_NS,
    flow::Stage,
    histogram::Leg,
    listener::{ListenerCounters, OTHER_PORT},
};
use handshake_tests::{
    cases::{
        INBOUND, In, Out, Step, V4, V6, X, Y, ack, cases, client, client6, completed, handshake,
        syn, synack, v4, v6,
    },
    packet::{ACK, Ext, PSH, Packet, RST, SYN},
    tester::{Ingress, Tester, XDP_PASS, run_steps, run_steps_on},
};
use handshake_user::probe::LoadOptions;

use Counter as C;

/// Every case, with its ingress frames through the XDP program and again
/// through the TC one.
#[test]
fn packet_sequences_leave_exact_counters() {
    let mut failures = Vec::new();
    for (ingress, case) in [Ingress::Xdp, Ingress::Tc]
        .into_iter()
        .flat_map(|i| cases().into_iter().map(move |c| (i, c)))
    {
        let mut tester = Tester::new();
        let name = format!("{} (ingress on {ingress:?})", case.name);
        if let Err(e) = run_steps_on(&mut tester, &case.steps, ingress) {
            failures.push(format!("{}: {e}", name));
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
            failures.push(format!(
                "{}:\n    expected {merged:?}\n    got      {got:?}",
                name
            ));
        }
        let packets = counters.total(Counter::Packets);
        if packets != case.steps.len() as u64 {
            failures.push(format!(
                "{}: packets counted {packets}, frames sent {}",
                name,
                case.steps.len()
            ));
        }
        let flows = tester.flows();
        if flows.len() != case.flows {
            failures.push(format!(
                "{}: {} flows left, expected {}",
                name,
                flows.len(),
                case.flows
            ));
        }
        // The pending filter counts exactly the flows left in syn_received.
        let syn_received = flows
            .iter()
            .filter(|(_, s)| s.stage == Stage::SynReceived as u8)
            .count() as u64;
        let pending = tester
            .probe()
            .pending_total()
            .expect("read the pending filter");
        if pending != syn_received {
            failures.push(format!(
                "{}: pending filter {pending}, flows in syn_received {syn_received}",
                name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
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
    // every length, through either ingress program.
    for ingress in [Ingress::Xdp, Ingress::Tc] {
        for len in 14..frame.len() {
            let before = tester.counters();
            ingress
                .pass(&mut tester, &frame[..len])
                .unwrap_or_else(|e| panic!("cut at {len}: {e}"));
            let after = tester.counters();
            let expected = bounds
                .iter()
                .find(|(end, _)| len < *end)
                .map(|(_, c)| *c)
                .expect("a bound");
            assert_eq!(
                after.total(expected) - before.total(expected),
                1,
                "{ingress:?}, cut at {len}: expected {expected:?}, got {:?}",
                after.nonzero()
            );
        }
    }
    assert_eq!(tester.counters().total(C::Attempts), 0);
    assert!(tester.flows().is_empty());
    // IPv4 with options: cut inside the options is an IPv4 error? No: the
    // fixed header is complete, the TCP header is not.
    let v4 = syn(&client().ipv4_options(8), X).build();
    for (len, counter) in [
        (20, C::ParseIpv4Truncated),
        (33, C::ParseIpv4Truncated),
        (34, C::ParseTcpTruncated),
        (61, C::ParseTcpTruncated),
    ] {
        let before = tester.counters().total(counter);
        tester.ingress(&v4[..len]);
        assert_eq!(
            tester.counters().total(counter) - before,
            1,
            "ipv4 cut at {len}"
        );
    }
}

#[test]
fn latency_is_recorded_once_per_leg() {
    let mut tester = Tester::new();
    run_steps(&mut tester, &handshake(&client())).expect("run");
    assert_eq!(tester.latency_count(INBOUND, Leg::SynToSynAck), 1);
    assert_eq!(tester.latency_count(INBOUND, Leg::SynAckToAck), 1);
    // A retransmitted SYN-ACK is not a second sample.
    let c = Packet::tcp(v4(9), 1234, v4(2), 80);
    run_steps(
        &mut tester,
        &[In(syn(&c, 1)), Out(synack(&c, 2, 2)), Out(synack(&c, 2, 2))],
    )
    .expect("run");
    assert_eq!(tester.latency_count(INBOUND, Leg::SynToSynAck), 2);
    assert_eq!(tester.latency_count(INBOUND, Leg::SynAckToAck), 1);
}

/// With a budget of 3 inserts per window, a burst of 10 new SYNs is counted
/// in full, 3 are tracked and 7 reported untracked; a tracked one still
/// completes.
#[test]
fn insert_budget_bounds_new_flows_and_counts_the_rest() {
    let options = LoadOptions {
        syn_insert_budget: 3,
        syn_insert_window_ns: 3_600_000_000_000,
        ..LoadOptions::default()
    };
    let mut tester = Tester::with(&options);
    let clients: Vec<Packet> = (0..10)
        .map(|i| Packet::tcp(v4(10 + i), 30000, v4(2), 80))
        .collect();
    let steps: Vec<Step> = clients.iter().map(|c| In(syn(c, X))).collect();
    run_steps(&mut tester, &steps).expect("run");
    let counters = tester.counters();
    assert_eq!(counters.get(V4, INBOUND, C::SynPackets), 10);
    assert_eq!(counters.get(V4, INBOUND, C::Attempts), 10);
    assert_eq!(counters.get(V4, INBOUND, C::SynUntracked), 7);
    assert_eq!(tester.flows().len(), 3);
    // The first three were tracked: the first completes.
    run_steps(
        &mut tester,
        &[
            Out(synack(&clients[0], Y, X + 1)),
            In(ack(&clients[0], X + 1, Y + 1)),
        ],
    )
    .expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::Completed), 1);
    // Port reuse on a tracked flow replaces in place: not charged.
    run_steps(&mut tester, &[In(syn(&clients[1], X + 99))]).expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::SynUntracked), 7);
    assert_eq!(tester.counters().get(V4, INBOUND, C::SupersededSynSent), 1);
}

/// Inbound handshakes are counted per local server port for the ports the
/// agent tracks, and under port 0 ("other") for the rest; outbound ones are
/// not listeners' business.
#[test]
fn listener_funnels_are_exact_and_bounded() {
    let mut tester = Tester::new();
    tester
        .probe()
        .track_listener_ports(&[80, 443])
        .expect("track ports");
    let a = Packet::tcp(v4(1), 1001, v4(2), 80);
    let b = Packet::tcp(v4(3), 1002, v4(2), 80);
    let refused = Packet::tcp(v4(4), 1003, v4(2), 80);
    let aborted = Packet::tcp(v4(5), 1004, v4(2), 80);
    let other = Packet::tcp(v4(6), 1005, v4(2), 8080);
    let mut steps = handshake(&a);
    steps.extend(handshake(&b));
    steps.extend([
        In(syn(&refused, X)),
        Out(refused.reply().flags(RST | ACK).ack(X + 1)),
    ]);
    steps.extend([
        In(syn(&aborted, X)),
        Out(synack(&aborted, Y, X + 1)),
        In(aborted.clone().flags(RST).seq(X + 1)),
    ]);
    steps.extend(handshake(&other));
    // Outbound, to a remote port 80: not a local listener's.
    steps.extend([Out(Packet::tcp(v4(2), 5555, v4(9), 80).flags(SYN).seq(X))]);
    run_steps(&mut tester, &steps).expect("run");
    let funnels = tester.probe().listeners().expect("read listeners");
    let port = |p: u16| funnels.iter().find(|(q, _)| *q == p).map(|(_, c)| *c);
    assert_eq!(
        port(80),
        Some(ListenerCounters {
            attempts: 4,
            synack: 3,
            completed: 2,
            rejected: 1,
            aborted: 1
        })
    );
    assert_eq!(port(443), Some(ListenerCounters::default()));
    assert_eq!(
        port(OTHER_PORT),
        Some(ListenerCounters {
            attempts: 1,
            synack: 1,
            completed: 1,
            rejected: 0,
            aborted: 0
        })
    );
    assert_eq!(funnels.len(), 3, "the kernel never adds ports: {funnels:?}");
    // Tracking a port again keeps its counts.
    tester
        .probe()
        .track_listener_ports(&[80])
        .expect("track again");
    assert_eq!(tester.probe().listeners().expect("read")[1].1.completed, 2);
}

/// A frame layout: its name, its family, and how it dresses a plain packet.
type Layout = (&'static str, Family, fn(Packet) -> Packet);

/// Data segments of flows with nothing pending take the filter's fast path
/// and change nothing; a final ACK whose slot is shared with another pending
/// flow still completes exactly once. For every layout the data-segment
/// screen reads at fixed offsets, and for some it leaves to the full parse.
#[test]
fn pending_filter_never_hides_a_final_ack() {
    let layouts: [Layout; 7] = [
        ("ipv4", V4, |p| p),
        ("ipv6", V6, |p| p),
        ("802.1Q ipv4", V4, |p| p.vlan(100)),
        ("802.1Q ipv6", V6, |p| p.vlan(100)),
        ("QinQ ipv4 (full parse)", V4, |p| p.qinq(10, 20)),
        ("ipv4 options (full parse)", V4, |p| p.ipv4_options(8)),
        ("ipv6 hop-by-hop (full parse)", V6, |p| {
            p.ext(Ext::HopByHop(0))
        }),
    ];
    for (name, family, layout) in layouts {
        let addr = |last: u8| {
            if family == V4 {
                v4(last)
            } else {
                v6(u16::from(last))
            }
        };
        let mut tester = Tester::new();
        let flows: Vec<Packet> = (0..200)
            .map(|i| layout(Packet::tcp(addr(1), 20000 + i, addr(2), 80)))
            .collect();
        let mut steps = Vec::new();
        for f in &flows {
            steps.extend([In(syn(f, X)), Out(synack(f, Y, X + 1))]);
        }
        run_steps(&mut tester, &steps).expect("run");
        assert_eq!(
            tester.probe().pending_total().expect("pending"),
            200,
            "{name}"
        );
        // Data on unrelated flows: no effect.
        let data: Vec<Step> = (0..200)
            .map(|i| {
                In(layout(Packet::tcp(addr(7), 30000 + i, addr(2), 80))
                    .flags(ACK | PSH)
                    .seq(5)
                    .ack(6)
                    .payload(100))
            })
            .collect();
        run_steps(&mut tester, &data).expect("run");
        let finals: Vec<Step> = flows.iter().map(|f| In(ack(f, X + 1, Y + 1))).collect();
        run_steps(&mut tester, &finals).expect("run");
        let counters = tester.counters();
        // 200 whole handshakes and nothing else: the data segments changed
        // no counter but the packet count.
        let mut expected: Vec<_> = completed(family, INBOUND)
            .into_iter()
            .map(|(f, d, c, n)| (f, d, c, n * 200))
            .collect();
        let mut got = counters.nonzero();
        expected.sort_by_key(|(f, d, c, _)| (*f as u8, *d as u8, *c as u32));
        got.sort_by_key(|(f, d, c, _)| (*f as u8, *d as u8, *c as u32));
        assert_eq!(got, expected, "{name}");
        assert_eq!(counters.total(C::Packets), 800, "{name}");
        assert_eq!(
            tester.probe().pending_total().expect("pending"),
            0,
            "{name}"
        );
        assert!(tester.flows().is_empty(), "{name}");
    }
}

/// Pins the calling thread to CPU 0: the insert budget is per CPU, and a
/// test that migrates mid-way would see two budgets.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; we set one bit and pass its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin to CPU 0"
        );
    }
}

/// A random-source SYN flood of 20x the table's capacity: every SYN is
/// counted, the insert budget keeps the flood from evicting the real
/// clients' entries, and all their handshakes complete. Without the budget
/// the same flood evicts them all, and says so. (The budget is a quarter of
/// the capacity: in a set-associative table a budget near the capacity
/// still overflows some buckets.)
#[test]
fn real_clients_survive_a_random_source_flood() {
    let flood: Vec<Vec<u8>> = (0..20_480u32)
        .map(|i| {
            let src = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
            syn(
                &Packet::tcp(src, 1024 + (i % 60000) as u16, v4(2), 80),
                i.wrapping_mul(2_654_435_761),
            )
            .build()
        })
        .collect();
    let real: Vec<Packet> = (0..10)
        .map(|i| Packet::tcp(v4(100 + i), 40000, v4(2), 80))
        .collect();
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
        run_steps(&mut tester, &opening).expect("run");
        for frame in &flood {
            assert_eq!(tester.ingress(frame), XDP_PASS);
        }
        let mut closing = Vec::new();
        for c in &real {
            closing.extend([Out(synack(c, Y, X + 1)), In(ack(c, X + 1, Y + 1))]);
        }
        run_steps(&mut tester, &closing).expect("run");
        let completed = tester.counters().get(V4, INBOUND, C::Completed);
        (tester, completed)
    };

    let (guarded, completed) = run_flood(256);
    let counters = guarded.counters();
    assert_eq!(counters.get(V4, INBOUND, C::SynPackets), 20_490);
    assert_eq!(counters.get(V4, INBOUND, C::Attempts), 20_490);
    assert_eq!(counters.get(V4, INBOUND, C::SynUntracked), 20_490 - 256);
    assert_eq!(completed, 10, "every real client completes");
    let evicted = counters.get(V4, INBOUND, C::EvictedSynSent);
    assert_eq!(
        guarded.flows().len() as u64 + evicted,
        256 - 10,
        "the tracked part of the flood is still there, or counted as evicted"
    );

    let (open, completed) = run_flood(u64::MAX);
    assert_eq!(
        completed, 0,
        "with no budget the flood evicts the real clients' entries"
    );
    let counters = open.counters();
    assert_eq!(
        counters.get(V4, INBOUND, C::SynUntracked) + counters.get(V4, INBOUND, C::SynInsertFailed),
        0
    );
    assert_eq!(
        open.flows().len() as u64 + counters.get(V4, INBOUND, C::EvictedSynSent),
        20_490,
        "every SYN was tracked, then evicted or still there"
    );
    assert_eq!(open.flows().len(), 1024, "a full table");
}

/// The agent's timeout path: handshakes stuck in each stage are counted by
/// stage and become tombstones, the pending filter drops back, and a request
/// naming another attempt than the one in the table changes nothing. The
/// peers' late retransmissions then count as late segments, not as new
/// attempts or backscatter; a new ISN starts a new attempt; forgetting
/// removes the tombstone.
#[test]
fn expire_counts_by_stage_and_tombstones_catch_late_segments() {
    let mut tester = Tester::new();
    let stuck_syn = Packet::tcp(v4(1), 1111, v4(2), 80);
    let stuck_synack = Packet::tcp(v4(1), 2222, v4(2), 80);
    run_steps(
        &mut tester,
        &[
            In(syn(&stuck_syn, X)),
            In(syn(&stuck_synack, X)),
            Out(synack(&stuck_synack, Y, X + 1)),
        ],
    )
    .expect("run");
    let flows = tester.flows();
    assert_eq!(flows.len(), 2);
    assert_eq!(tester.probe().pending_total().expect("pending"), 1);
    for (key, state) in &flows {
        assert!(
            !tester.expire(key, state.syn_ns + 1),
            "another attempt's time: left alone"
        );
        assert!(
            !tester.probe().forget(key, state.syn_ns).expect("forget"),
            "not a tombstone yet"
        );
    }
    for (key, state) in &flows {
        assert!(tester.expire(key, state.syn_ns));
        assert!(!tester.expire(key, state.syn_ns), "counted once");
    }
    let counters = tester.counters();
    assert_eq!(counters.get(V4, INBOUND, C::TimeoutSynSent), 1);
    assert_eq!(counters.get(V4, INBOUND, C::TimeoutSynReceived), 1);
    assert_eq!(tester.probe().pending_total().expect("pending"), 0);
    assert!(
        tester
            .flows()
            .iter()
            .all(|(_, s)| s.stage == Stage::Expired as u8),
        "two tombstones"
    );
    // The client retries its SYN, the server its SYN-ACK, a RST arrives:
    // late, all of them. The final ACK finds nothing to complete.
    run_steps(
        &mut tester,
        &[
            In(syn(&stuck_syn, X)),
            Out(synack(&stuck_synack, Y, X + 1)),
            In(ack(&stuck_synack, X + 1, Y + 1)),
            In(stuck_syn.clone().flags(RST).seq(X + 1)),
        ],
    )
    .expect("run");
    let counters = tester.counters();
    assert_eq!(
        counters.get(V4, INBOUND, C::LateSegment),
        3,
        "{:?}",
        counters.nonzero()
    );
    assert_eq!(counters.get(V4, INBOUND, C::Attempts), 2, "no new attempt");
    assert_eq!(counters.get(V4, INBOUND, C::Completed), 0);
    assert_eq!(
        counters.get(V4, INBOUND, C::Unsolicited)
            + counters.get(V4, Direction::Outbound, C::Unsolicited),
        0
    );
    // Port reuse after the timeout: a new attempt, not charged to the budget.
    let x2 = X + 500_000;
    run_steps(
        &mut tester,
        &[
            In(syn(&stuck_syn, x2)),
            Out(synack(&stuck_syn, Y, x2 + 1)),
            In(ack(&stuck_syn, x2 + 1, Y + 1)),
        ],
    )
    .expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::Attempts), 3);
    assert_eq!(tester.counters().get(V4, INBOUND, C::Completed), 1);
    // Forgetting the remaining tombstone empties the table.
    let (key, state) = tester.flows()[0];
    assert!(tester.probe().forget(&key, state.syn_ns).expect("forget"));
    assert!(tester.flows().is_empty());
}

/// An interface given a slot has its own counters; the rest share slot 0.
#[test]
fn interface_slots_separate_counters() {
    let mut tester = Tester::new();
    // BPF_PROG_TEST_RUN runs on this namespace's loopback device.
    let lo = std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .expect("lo")
        .trim()
        .parse::<u32>()
        .expect("ifindex");
    run_steps(&mut tester, &handshake(&client())).expect("run");
    tester.probe().set_iface_slot(lo, 5).expect("set slot");
    assert_eq!(tester.probe().iface_slots().expect("slots"), vec![(lo, 5)]);
    run_steps(
        &mut tester,
        &handshake(&Packet::tcp(v4(3), 3333, v4(2), 80)),
    )
    .expect("run");
    let counters = tester.counters();
    assert_eq!(counters.in_slot(0, V4, INBOUND, C::Completed), 1);
    assert_eq!(counters.in_slot(5, V4, INBOUND, C::Completed), 1);
    assert_eq!(
        counters.in_slot(5, V4, INBOUND, C::Packets),
        2,
        "two frames arrived after the slot was set"
    );
}

/// Loaded for replay, the programs take the time from the map: latencies are
/// exactly the differences of the times set.
#[test]
fn replay_clock_drives_latency() {
    let mut tester = Tester::with(&LoadOptions {
        clock_from_map: true,
        ..LoadOptions::default()
    });
    let c = client();
    let at = |t: &mut Tester, ns: u64| t.probe().set_replay_clock(ns).expect("set clock");
    at(&mut tester, 1_000_000);
    run_steps(&mut tester, &[In(syn(&c, X))]).expect("run");
    at(&mut tester, 1_002_000);
    run_steps(&mut tester, &[Out(synack(&c, Y, X + 1))]).expect("run");
    at(&mut tester, 1_009_000);
    run_steps(&mut tester, &[In(ack(&c, X + 1, Y + 1))]).expect("run");
    assert_eq!(tester.latency_sum_ns(INBOUND, Leg::SynToSynAck), 2_000);
    assert_eq!(tester.latency_sum_ns(INBOUND, Leg::SynAckToAck), 7_000);
    assert_eq!(
        tester.latency_bucket(INBOUND, Leg::SynToSynAck, 1),
        1,
        "2 µs <= 2 µs"
    );
    assert_eq!(
        tester.latency_bucket(INBOUND, Leg::SynAckToAck, 3),
        1,
        "7 µs <= 8 µs"
    );
}

/// An ended handshake is remembered for `ENDED_LINGER_NS`: the same SYN
/// within it is a retransmission, after it a new attempt.
#[test]
fn ended_handshakes_are_remembered_for_a_while() {
    let mut tester = Tester::with(&LoadOptions {
        clock_from_map: true,
        ..LoadOptions::default()
    });
    let c = client();
    let at = |t: &mut Tester, ns: u64| t.probe().set_replay_clock(ns).expect("set clock");
    let start = 1_000_000_000;
    at(&mut tester, start);
    run_steps(&mut tester, &handshake(&c)).expect("run");
    assert!(tester.flows().is_empty());
    assert_eq!(tester.ended().len(), 1, "remembered");
    at(&mut tester, start + ENDED_LINGER_NS - 1);
    run_steps(&mut tester, &[In(syn(&c, X))]).expect("run");
    let counters = tester.counters();
    assert_eq!(counters.get(V4, INBOUND, C::RetransmitSyn), 1);
    assert_eq!(counters.get(V4, INBOUND, C::Attempts), 1);
    at(&mut tester, start + ENDED_LINGER_NS);
    run_steps(&mut tester, &[In(syn(&c, X))]).expect("run");
    let counters = tester.counters();
    assert_eq!(counters.get(V4, INBOUND, C::RetransmitSyn), 1);
    assert_eq!(counters.get(V4, INBOUND, C::Attempts), 2, "a new attempt");
    assert_eq!(tester.flows().len(), 1, "in progress again");
    assert!(tester.ended().is_empty(), "the way reused in place");
}

//! The flow table on the real programs (BPF_PROG_TEST_RUN): which way a
//! full bucket gives up, the in-place scan against iteration, and the
//! benchmarks' own programs (their object is not the agent's).
use std::net::IpAddr;

use handshake_common::{
    counters::{Counter, Family},
    flow::FlowKey,
    table,
};
use handshake_tests::{
    cases::{INBOUND, In, Out, Step, V4, X, Y, ack, client, syn, synack, v4},
    packet::Packet,
    tester::{Tester, XDP_PASS, run_steps},
};
use handshake_user::probe::LoadOptions;

use Counter as C;

/// The in-place flow-table read the agent uses agrees with a walk that
/// reads one bucket per syscall.
#[test]
fn in_place_scan_matches_iteration() {
    let mut tester = Tester::new();
    let steps: Vec<Step> = (0..5000u32)
        .map(|i| {
            In(syn(
                &Packet::tcp(
                    IpAddr::from([198, 18, (i >> 8) as u8, i as u8]),
                    1000,
                    v4(2),
                    80,
                ),
                i,
            ))
        })
        .collect();
    run_steps(&mut tester, &steps).expect("run");
    let mut walked = tester.entries();
    let mut batched = tester.probe().flows().expect("in-place scan");
    walked.sort_by_key(|(k, _)| (k.src_addr, k.src_port));
    batched.sort_by_key(|(k, _)| (k.src_addr, k.src_port));
    // 5000 flows in 65536 ways, two buckets to choose from: none evicted.
    assert_eq!(tester.counters().get(V4, INBOUND, C::EvictedSynSent), 0);
    assert_eq!(batched.len(), 5000);
    assert_eq!(batched, walked);
}

/// The flow-table key of an IPv4 client's connection.
fn flow_key(c: &Packet) -> FlowKey {
    let word = |ip: IpAddr| match ip {
        IpAddr::V4(a) => u32::from_ne_bytes(a.octets()),
        IpAddr::V6(_) => unreachable!("IPv4 clients only"),
    };
    FlowKey::new(
        [word(c.src), 0, 0, 0],
        [word(c.dst), 0, 0, 0],
        c.sport,
        c.dport,
        Family::Ipv4 as u8,
    )
}

/// A table of two buckets, so that every flow may sit in either: once both
/// are full, a new flow takes the way of a tombstone first, then of the
/// oldest handshake waiting for a SYN-ACK, then of the oldest waiting for
/// the final ACK; each eviction of a live handshake is counted by its stage,
/// the pending filter stays exact, and the evicted flow's later segments
/// find nothing.
#[test]
fn full_buckets_evict_the_least_valuable_way_and_count_it() {
    const WAYS: usize = 2 * table::WAYS;
    let mut tester = Tester::with(&LoadOptions {
        flow_table_size: WAYS as u32,
        ..LoadOptions::default()
    });
    assert_eq!(table::buckets_for(WAYS as u32), 2);
    let c: Vec<Packet> = (0..WAYS as u16 + 3)
        .map(|i| Packet::tcp(v4(1), 1024 + i, v4(2), 80))
        .collect();
    let key = flow_key;
    let mut fill: Vec<Step> = c[..WAYS].iter().map(|c| In(syn(c, X))).collect();
    fill.push(Out(synack(&c[0], Y, X + 1)));
    run_steps(&mut tester, &fill).expect("run");
    assert_eq!(tester.flows().len(), WAYS, "both buckets hold the flows");
    assert_eq!(tester.counters().get(V4, INBOUND, C::EvictedSynSent), 0);
    // The next evicts c1, the oldest still waiting for its SYN-ACK.
    run_steps(&mut tester, &[In(syn(&c[WAYS], X))]).expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::EvictedSynSent), 1);
    let tracked: Vec<FlowKey> = tester.flows().iter().map(|(k, _)| *k).collect();
    assert!(!tracked.contains(&key(&c[1])), "c1 evicted");
    // c2 times out; the next takes its tombstone's way, evicting nothing.
    let (k2, s2) = tester
        .flows()
        .into_iter()
        .find(|(k, _)| *k == key(&c[2]))
        .expect("c2 tracked");
    assert!(tester.expire(&k2, s2.syn_ns));
    run_steps(&mut tester, &[In(syn(&c[WAYS + 1], X))]).expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::EvictedSynSent), 1);
    assert!(
        !tester.flows().iter().any(|(k, _)| *k == k2),
        "the tombstone went"
    );
    // All in syn_received: the last evicts c0, the oldest of them.
    let answered = 3..WAYS + 2;
    let synacks: Vec<Step> = c[answered.clone()]
        .iter()
        .map(|c| Out(synack(c, Y, X + 1)))
        .collect();
    run_steps(&mut tester, &synacks).expect("run");
    assert_eq!(
        tester.probe().pending_total().expect("pending"),
        WAYS as u64
    );
    run_steps(&mut tester, &[In(syn(&c[WAYS + 2], X))]).expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::EvictedSynReceived), 1);
    assert_eq!(
        tester.probe().pending_total().expect("pending"),
        WAYS as u64 - 1,
        "the evicted flow left the pending filter"
    );
    // The evicted flows' segments find nothing; the others complete.
    let mut last: Vec<Step> = vec![Out(synack(&c[1], Y, X + 1)), In(ack(&c[0], X + 1, Y + 1))];
    last.extend(c[answered.clone()].iter().map(|c| In(ack(c, X + 1, Y + 1))));
    run_steps(&mut tester, &last).expect("run");
    let counters = tester.counters();
    assert_eq!(
        counters.get(V4, INBOUND, C::Completed),
        answered.len() as u64
    );
    assert_eq!(counters.get(V4, INBOUND, C::Unsolicited), 1, "c1's SYN-ACK");
    assert_eq!(counters.get(V4, INBOUND, C::Attempts), WAYS as u64 + 3);
    assert_eq!(
        counters.get(V4, INBOUND, C::SynAck),
        answered.len() as u64 + 1
    );
    assert_eq!(counters.get(V4, INBOUND, C::TimeoutSynSent), 1);
    assert_eq!(tester.probe().pending_total().expect("pending"), 0);
    assert_eq!(tester.flows().len(), 1, "the last, still waiting");
}

/// The benchmarks' own programs do what their rows say (`cargo xtask
/// bench`, B1): the stepping program makes a new flow on every run and
/// counts it as the ingress program does; "lookup and insert alone" makes
/// the same flows and counts nothing; the clock program changes nothing.
#[test]
fn benchmark_programs_do_what_their_rows_say() {
    use aya::programs::{TestRun as _, TestRunOptions};
    use handshake_tests::bench_object::{BenchPrograms as _, names as program_names};

    const RUNS: u32 = 10;
    let ipv4_src = 14 + 12;
    let frame = syn(&client(), X).build();
    let run = |tester: &mut Tester, program: &str| {
        let p = tester.probe();
        p.set_bench_step(ipv4_src).expect("BENCH_STEP");
        let result = p
            .bench_xdp(program)
            .expect(program)
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: RUNS,
                ..TestRunOptions::default()
            })
            .expect("test run");
        assert_eq!(result.return_value, XDP_PASS, "{program}");
    };

    let mut stepped = Tester::bench_with(&LoadOptions::default());
    run(&mut stepped, program_names::BENCH_STEPPED_INGRESS);
    assert_eq!(stepped.flows().len(), RUNS as usize, "a new flow every run");
    assert_eq!(
        stepped.counters().get(V4, INBOUND, C::Attempts),
        u64::from(RUNS)
    );

    let mut insert_only = Tester::bench_with(&LoadOptions::default());
    run(&mut insert_only, program_names::BENCH_INSERT_ONLY);
    assert_eq!(
        insert_only.flows().len(),
        RUNS as usize,
        "a new flow every run"
    );
    assert_eq!(insert_only.counters().nonzero(), vec![], "no counter moves");

    let mut clock = Tester::bench_with(&LoadOptions::default());
    run(&mut clock, program_names::BENCH_CLOCK_XDP);
    assert!(clock.flows().is_empty());
    assert_eq!(clock.counters().nonzero(), vec![]);
}

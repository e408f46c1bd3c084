//! The flow table on the real programs (BPF_PROG_TEST_RUN): which way a
//! full bucket gives up, the in-place scan against iteration, and the
//! benchmarks' own programs (their object is not the agent's).
use std::net::IpAddr;

use handshake_common::{
    DEFAULT_FLOW_TABLE_SIZE,
    counters::{Counter, Family},
    flow::FlowKey,
    table,
};
use handshake_tests::{
    cases::{INBOUND, In, Out, Step, V4, X, Y, ack, client, syn, synack, v4},
    packet::Packet,
    tester::{TEST_FLOW_SEED, Tester, XDP_PASS, run_steps},
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
    // 5000 flows in 16384 four-way buckets: a bucket may overflow, and the
    // eviction is counted.
    let evicted = tester.counters().get(V4, INBOUND, C::EvictedSynSent);
    assert_eq!(batched.len() as u64 + evicted, 5000);
    assert!(evicted <= 2, "{evicted} evicted");
    assert_eq!(batched, walked);
}

/// Seven clients whose flows share one bucket of the default table (four
/// ways), under the tests' fixed seed.
fn clients_sharing_a_bucket() -> Vec<Packet> {
    let mask = table::buckets_for(DEFAULT_FLOW_TABLE_SIZE) - 1;
    let bucket =
        |c: &Packet| table::place(table::flow_hash(&flow_key(c), TEST_FLOW_SEED), mask).bucket;
    let candidates = (1..=250u8)
        .flat_map(|last| (1024..3024u16).map(move |port| Packet::tcp(v4(last), port, v4(2), 80)));
    let target = bucket(&Packet::tcp(v4(1), 1024, v4(2), 80));
    let clients: Vec<Packet> = candidates.filter(|c| bucket(c) == target).take(7).collect();
    assert_eq!(clients.len(), 7);
    clients
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

/// A full bucket: a new flow takes the way of a tombstone first, then of the
/// oldest handshake waiting for a SYN-ACK, then of the oldest waiting for
/// the final ACK; each eviction of a live handshake is counted by its stage,
/// the pending filter stays exact, and the evicted flow's later segments
/// find nothing.
#[test]
fn a_full_bucket_evicts_the_least_valuable_way_and_counts_it() {
    let mut tester = Tester::new();
    let c = clients_sharing_a_bucket();
    let key = flow_key;
    // Four SYNs fill the bucket; c0 gets its SYN-ACK.
    run_steps(
        &mut tester,
        &[
            In(syn(&c[0], X)),
            In(syn(&c[1], X)),
            In(syn(&c[2], X)),
            In(syn(&c[3], X)),
            Out(synack(&c[0], Y, X + 1)),
        ],
    )
    .expect("run");
    assert_eq!(tester.flows().len(), 4);
    // c4 evicts c1, the oldest still waiting for its SYN-ACK.
    run_steps(&mut tester, &[In(syn(&c[4], X))]).expect("run");
    let counters = tester.counters();
    assert_eq!(counters.get(V4, INBOUND, C::EvictedSynSent), 1);
    let tracked: Vec<FlowKey> = tester.flows().iter().map(|(k, _)| *k).collect();
    assert!(!tracked.contains(&key(&c[1])), "c1 evicted");
    // c2 times out; c5 takes its tombstone's way, evicting no handshake.
    let (k2, s2) = tester
        .flows()
        .into_iter()
        .find(|(k, _)| *k == key(&c[2]))
        .expect("c2 tracked");
    assert!(tester.expire(&k2, s2.syn_ns));
    run_steps(&mut tester, &[In(syn(&c[5], X))]).expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::EvictedSynSent), 1);
    assert!(
        !tester.flows().iter().any(|(k, _)| *k == k2),
        "the tombstone went"
    );
    // All four in syn_received: c6 evicts c0, the oldest of them.
    run_steps(
        &mut tester,
        &[
            Out(synack(&c[3], Y, X + 1)),
            Out(synack(&c[4], Y, X + 1)),
            Out(synack(&c[5], Y, X + 1)),
        ],
    )
    .expect("run");
    assert_eq!(tester.probe().pending_total().expect("pending"), 4);
    run_steps(&mut tester, &[In(syn(&c[6], X))]).expect("run");
    assert_eq!(tester.counters().get(V4, INBOUND, C::EvictedSynReceived), 1);
    assert_eq!(
        tester.probe().pending_total().expect("pending"),
        3,
        "the evicted flow left the pending filter"
    );
    // The evicted flows' segments find nothing; the others complete.
    run_steps(
        &mut tester,
        &[
            Out(synack(&c[1], Y, X + 1)),
            In(ack(&c[0], X + 1, Y + 1)),
            In(ack(&c[3], X + 1, Y + 1)),
            In(ack(&c[4], X + 1, Y + 1)),
            In(ack(&c[5], X + 1, Y + 1)),
        ],
    )
    .expect("run");
    let counters = tester.counters();
    assert_eq!(counters.get(V4, INBOUND, C::Completed), 3);
    assert_eq!(counters.get(V4, INBOUND, C::Unsolicited), 1, "c1's SYN-ACK");
    assert_eq!(counters.get(V4, INBOUND, C::Attempts), 7);
    assert_eq!(counters.get(V4, INBOUND, C::SynAck), 4);
    assert_eq!(counters.get(V4, INBOUND, C::TimeoutSynSent), 1);
    assert_eq!(tester.probe().pending_total().expect("pending"), 0);
    assert_eq!(tester.flows().len(), 1, "c6, still waiting");
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

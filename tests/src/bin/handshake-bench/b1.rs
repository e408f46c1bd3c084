//! B1: what each packet costs the programs (BPF_PROG_TEST_RUN), against
//! an empty program in the same run: data segments, new flows, a full
//! table, the later legs, and the clock and the table alone.
use super::*;

/// B1: ns per packet over the empty program, for one case. `measure(ours)`
/// returns ns per packet for one run of ours (true) or the baseline.
pub(crate) fn b1_case(
    s: &Settings,
    rows: &mut Vec<Row>,
    case: &str,
    goal_ns: Option<f64>,
    measure: impl FnMut(bool) -> f64,
) {
    b1_case_runs(s.runs, rows, case, goal_ns, measure);
}

pub(crate) fn b1_case_runs(
    runs: usize,
    rows: &mut Vec<Row>,
    case: &str,
    goal_ns: Option<f64>,
    mut measure: impl FnMut(bool) -> f64,
) {
    let pairs: Vec<(f64, f64)> = (0..runs).map(|i| b1_pair(i, &mut measure)).collect();
    b1_row(rows, case, goal_ns, &pairs);
}

/// B1 for cases measured in rounds: each round runs one pair of every case
/// in turn, so that every case's pairs are spread over the whole time the
/// cases take, and a spell of the machine running slower or faster (see
/// docs/benchmark-method.md) weighs on all of them alike rather than on
/// whichever case it fell in. `measure(case, ours)` as in [`b1_case`].
pub(crate) fn b1_cases_in_rounds(
    runs: usize,
    rows: &mut Vec<Row>,
    cases: &[(&str, Option<f64>)],
    mut measure: impl FnMut(usize, bool) -> f64,
) {
    let mut pairs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    for i in 0..runs {
        for (case, case_pairs) in pairs.iter_mut().enumerate() {
            case_pairs.push(b1_pair(i, &mut |ours| measure(case, ours)));
        }
    }
    for ((case, goal_ns), case_pairs) in cases.iter().zip(&pairs) {
        b1_row(rows, case, *goal_ns, case_pairs);
    }
}

/// Pair `i` of runs: (baseline, ours). Each pair in turn starts with the
/// baseline, then with ours: a drift in the machine's speed does not always
/// favour one side.
pub(crate) fn b1_pair(i: usize, measure: &mut impl FnMut(bool) -> f64) -> (f64, f64) {
    if i.is_multiple_of(2) {
        let bv = measure(false);
        (bv, measure(true))
    } else {
        let ov = measure(true);
        (measure(false), ov)
    }
}

/// The row of a B1 case from its pairs of runs: the medians, and the
/// median of the pairs' differences graded against `goal_ns`.
pub(crate) fn b1_row(rows: &mut Vec<Row>, case: &str, goal_ns: Option<f64>, pairs: &[(f64, f64)]) {
    let mut b: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let mut o: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    let mut d: Vec<f64> = pairs.iter().map(|p| p.1 - p.0).collect();
    let (bm, om, dm) = (median(&mut b), median(&mut o), median(&mut d));
    rows.push(Row {
        bench: "B1",
        case: case.to_owned(),
        baseline: format!("{bm:.1} ns"),
        ours: format!("{om:.1} ns"),
        figure: format!("+{dm:.1} ns ({:.2}x)", om / bm),
        goal: goal_ns.map_or("-".to_owned(), |g| format!("<= +{g:.0} ns")),
        verdict: verdict(goal_ns.map(|g| dm <= g)),
    });
    eprintln!("  B1 {case}: +{dm:.1} ns");
}

pub(crate) fn b1(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!("B1 per packet (BPF_PROG_TEST_RUN, repeat {})", s.repeat);
    let _pinned = PinnedToLastCpu::new();
    let clock = TestRunClock::new();
    let clock = &clock;
    let mut t = Tester::bench_with(&unlimited(1 << 20));
    // Repeat cases: the same frame `repeat` times in the kernel.
    let mut arp = data_segment(&client());
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let v6 = Packet::tcp(
        IpAddr::from([0x2001, 2, 0, 0, 0, 0, 0, 1]),
        40000,
        IpAddr::from([0x2001, 2, 0, 0, 0, 0, 0, 2]),
        443,
    );
    // Which program a same-frame case runs, and against which empty one.
    #[derive(Clone, Copy)]
    enum Program {
        Ingress,
        Egress,
        Clock,
    }
    let repeat_cases: Vec<(&str, Vec<u8>, Option<f64>, Program)> = vec![
        ("non-IP frame (ARP)", arp, None, Program::Ingress),
        (
            "TCP data segment, IPv4",
            data_segment(&client()),
            Some(10.0),
            Program::Ingress,
        ),
        (
            "TCP data segment, IPv6",
            data_segment(&v6),
            Some(10.0),
            Program::Ingress,
        ),
        (
            "TCP data segment, 802.1Q",
            data_segment(&client().vlan(100)),
            Some(10.0),
            Program::Ingress,
        ),
        (
            "TCP data segment, egress (TC)",
            data_segment(&client().reply()),
            Some(10.0),
            Program::Egress,
        ),
        // The screen reads the usual layouts at fixed offsets; others take
        // the full parse, as this one with IPv4 options does.
        (
            "TCP data segment, IPv4 with options (full parse)",
            data_segment(&client().ipv4_options(8)),
            None,
            Program::Ingress,
        ),
        (
            "retransmitted SYN (flow lookup)",
            syn(&client(), 1).build(),
            None,
            Program::Ingress,
        ),
        // What one read of the clock costs: a new flow, a SYN-ACK and a
        // completing ACK each make one, and it is the only helper call on
        // their paths.
        (
            "the clock alone (bpf_ktime_get_ns), which a new flow, a SYN-ACK and a completing ACK each read once",
            data_segment(&client()),
            None,
            Program::Clock,
        ),
    ];
    // Prime the retransmit case: the first SYN inserts, the rest look up.
    t.ingress(&syn(&client(), 1).build());
    let r = s.repeat;
    // These runs are short (the same frame `repeat` times, some 30 ms): three
    // times as many pairs, for a steadier median on a machine whose speed
    // wanders (see docs/benchmark-method.md).
    let runs = s.runs * 3;
    let names: Vec<(&str, Option<f64>)> = repeat_cases
        .iter()
        .map(|(name, _, goal, _)| (*name, *goal))
        .collect();
    b1_cases_in_rounds(runs, rows, &names, |case, ours| {
        let (_, frame, _, program) = &repeat_cases[case];
        let p = t.probe();
        match (program, ours) {
            (Program::Ingress | Program::Clock, false) => {
                clock.xdp_ns(p.baseline_xdp().expect("xdp"), frame, r)
            }
            (Program::Ingress, true) => clock.xdp_ns(p.ingress_program().expect("xdp"), frame, r),
            (Program::Clock, true) => clock.xdp_ns(
                p.bench_xdp(bench_names::BENCH_CLOCK_XDP).expect("xdp"),
                frame,
                r,
            ),
            (Program::Egress, false) => clock.tc_ns(p.baseline_tc().expect("tc"), frame, r),
            (Program::Egress, true) => clock.tc_ns(p.egress_program().expect("tc"), frame, r),
        }
    });
    // State-changing cases: the stepping programs advance an address before
    // every run, so `repeat` runs are `repeat` different flows; the baseline
    // is the step alone.
    let ipv4_src = 14 + 12;
    let ipv4_dst = 14 + 16;
    let v6_src_last_word = 14 + 8 + 12;
    let qinq_ipv4_src = 14 + 8 + 12;
    // New flows into an empty table: the agent's default table (65536
    // flows), from empty. `repeat` new flows cannot all fit in it, so they
    // go in test runs of half a table each, the table emptied (untimed)
    // before each: it is never more than half full. The cases run in
    // rounds, as the same-frame ones, on one set of loaded programs (a load
    // is some 0.3 s of verifying); every test run starts from the emptied
    // table. The last case is the host's own connections: its SYNs leave
    // through the egress program, each here to another server.
    // Beside them, the same table's lookup and insert alone (no clock, no
    // counters): their share of a new flow.
    let case = |name, goal, hook, program, frame: Packet, offset| SteppedCase {
        name,
        goal,
        hook,
        program,
        frame: frame.build(),
        offset,
    };
    let new_flows = [
        case(
            "SYN into an empty table (new flow), IPv4",
            Some(160.0),
            Ingress,
            bench_names::BENCH_STEPPED_INGRESS,
            syn(&client(), 7),
            ipv4_src,
        ),
        case(
            "SYN into an empty table (new flow), IPv6",
            Some(160.0),
            Ingress,
            bench_names::BENCH_STEPPED_INGRESS,
            syn(&v6, 7),
            v6_src_last_word,
        ),
        case(
            "SYN into an empty table (new flow), QinQ",
            Some(160.0),
            Ingress,
            bench_names::BENCH_STEPPED_INGRESS,
            syn(&client().qinq(10, 20), 7),
            qinq_ipv4_src,
        ),
        case(
            "outbound SYN, new flow, egress (TC)",
            Some(160.0),
            Egress,
            bench_names::BENCH_STEPPED_EGRESS,
            syn(&client(), 7),
            ipv4_dst,
        ),
        case(
            "flow-table lookup and insert alone, IPv4, same empty default table (its share of a new flow)",
            None,
            Ingress,
            bench_names::BENCH_INSERT_ONLY,
            syn(&client(), 7),
            ipv4_src,
        ),
    ];
    let names: Vec<(&str, Option<f64>)> = new_flows.iter().map(|c| (c.name, c.goal)).collect();
    let mut flows = Tester::bench_with(&unlimited(DEFAULT_TABLE));
    b1_cases_in_rounds(s.runs, rows, &names, |case, ours| {
        let c = &new_flows[case];
        in_half_tables(
            &mut flows,
            r,
            |_| {},
            |t| {
                let evicted = t.counters().total(Counter::EvictedSynSent);
                let ns = stepped_with(
                    clock, t, c.hook, c.program, &c.frame, c.offset, HALF_TABLE, ours,
                );
                if ours {
                    let evicted = t.counters().total(Counter::EvictedSynSent) - evicted;
                    assert_eq!(
                        tracked(t) + evicted,
                        u64::from(HALF_TABLE),
                        "{}: every SYN a new flow",
                        c.name
                    );
                }
                ns
            },
        )
    });
    let mut full = Tester::bench_with(&unlimited(DEFAULT_TABLE));
    b1_case(
        s,
        rows,
        "SYN into a full table (evicts)",
        Some(400.0),
        |ours| {
            // Other flows (another address range) fill the table first: from
            // empty, so that no flow of the measured SYNs is left from a run
            // before.
            full.empty_flow_table();
            let mut other = syn(&client(), 3).build();
            other[ipv4_src as usize] = 10;
            stepped(
                clock,
                &mut full,
                Ingress,
                &other,
                ipv4_src,
                DEFAULT_TABLE * 2,
            );
            let frame = syn(&client(), 7).build();
            if !ours {
                return step_only(clock, &mut full, Ingress, &frame, ipv4_src, r);
            }
            let before = full.counters().total(Counter::Attempts);
            let ns = stepped(clock, &mut full, Ingress, &frame, ipv4_src, r);
            assert_eq!(
                full.counters().total(Counter::Attempts) - before,
                u64::from(r),
                "every run a new flow"
            );
            ns
        },
    );
    // SYN-ACK (egress) and completing ACK (ingress), on flows the stepped
    // SYNs (and SYN-ACKs) prepared, half a default table at a time.
    let (syn_frame, synack_frame, ack_frame) = (
        syn(&client(), 7).build(),
        synack(&client(), 9, 8).build(),
        ack(&client(), 8, 10).build(),
    );
    // Every packet moves `counter`, or finds nothing because its flow was
    // evicted (and counted) when its bucket overflowed.
    let later_leg = |case: &str,
                     prepare: &dyn Fn(&mut Tester),
                     hook: Hook,
                     frame: &[u8],
                     offset: u32,
                     counter: Counter,
                     rows: &mut Vec<Row>| {
        let mut t = Tester::bench_with(&unlimited(DEFAULT_TABLE));
        let met = |t: &Tester| {
            let c = t.counters();
            c.total(counter) + c.total(Counter::EvictedSynSent)
        };
        b1_case(s, rows, case, None, |ours| {
            let before = met(&t);
            let ns = in_half_tables(&mut t, r, prepare, |t| {
                stepped_run(clock, t, hook, frame, offset, HALF_TABLE, ours)
            });
            if ours {
                let sent = u64::from(r.div_ceil(HALF_TABLE) * HALF_TABLE);
                assert_eq!(met(&t) - before, sent, "{case}: every packet met its flow");
            }
            ns
        });
    };
    let syns = |t: &mut Tester| _ = stepped(clock, t, Ingress, &syn_frame, ipv4_src, HALF_TABLE);
    let syns_and_synacks = |t: &mut Tester| {
        syns(t);
        stepped(clock, t, Egress, &synack_frame, ipv4_dst, HALF_TABLE);
    };
    later_leg(
        "SYN-ACK, egress (TC)",
        &syns,
        Egress,
        &synack_frame,
        ipv4_dst,
        Counter::SynAck,
        rows,
    );
    later_leg(
        "completing ACK",
        &syns_and_synacks,
        Ingress,
        &ack_frame,
        ipv4_src,
        Counter::Completed,
        rows,
    );
    // The same new flows into a table far bigger than the caches: `repeat`
    // flows into a 2M-entry table (208 MiB), each SYN's bucket a cache and
    // TLB miss. Beside them, the floor such a miss puts under any table on
    // this machine: one dependent read at a random line of as much memory.
    let big_table = |case: &str, program: &str, rows: &mut Vec<Row>| {
        let mut t = Tester::bench_with(&unlimited(BIG_TABLE));
        b1_case(s, rows, case, None, |ours| {
            let frame = syn(&client(), 7).build();
            if !ours {
                return step_only(clock, &mut t, Ingress, &frame, ipv4_src, r);
            }
            t.empty_flow_table();
            let evicted = t.counters().total(Counter::EvictedSynSent);
            let p = t.probe();
            p.set_bench_step(ipv4_src).expect("BENCH_STEP");
            let ns = clock.xdp_ns(p.bench_xdp(program).expect("xdp"), &frame, r);
            let evicted = t.counters().total(Counter::EvictedSynSent) - evicted;
            assert_eq!(
                tracked(&t) + evicted,
                u64::from(r),
                "{case}: every SYN a new flow"
            );
            ns
        });
    };
    big_table(
        "SYN, new flow, IPv4, 1M flows into a 2M-entry table (208 MiB)",
        bench_names::BENCH_STEPPED_INGRESS,
        rows,
    );
    big_table(
        "flow-table lookup and insert alone, same 2M-entry table (its share of a new flow)",
        bench_names::BENCH_INSERT_ONLY,
        rows,
    );
    for (table, which) in [
        (DEFAULT_TABLE, "the default table"),
        (BIG_TABLE, "the 2M-entry table"),
    ] {
        let bytes = (table::buckets_for(table) as usize) * size_of::<Bucket>();
        let size = format!("{:.1} MiB, {which}", bytes as f64 / f64::from(1 << 20));
        let mut reads: Vec<f64> = (0..s.runs).map(|_| random_read_ns(bytes)).collect();
        let floor = median(&mut reads);
        rows.push(Row {
            bench: "B1",
            case: format!(
                "floor: a dependent read at a random line of {size} (user space, 4 KiB pages)"
            ),
            baseline: "-".to_owned(),
            ours: format!("{floor:.1} ns"),
            figure: format!("{floor:.1} ns per read"),
            goal: "-".to_owned(),
            verdict: "-",
        });
        eprintln!("  B1 floor, {size}: {floor:.1} ns");
    }
}

/// A B1 case of stepped runs: each run's frame is a new flow.
pub(crate) struct SteppedCase {
    name: &'static str,
    goal: Option<f64>,
    hook: Hook,
    /// The stepping program that is ours; the baseline is the step alone.
    program: &'static str,
    frame: Vec<u8>,
    /// Where in the frame the step adds one: an address.
    offset: u32,
}

/// ns per packet over `total` packets, sent as test runs of [`HALF_TABLE`]
/// packets each, the flow table emptied before each run; `prepare` makes
/// the flows a run needs (untimed), `run` is the timed test run.
pub(crate) fn in_half_tables(
    t: &mut Tester,
    total: u32,
    prepare: impl Fn(&mut Tester),
    mut run: impl FnMut(&mut Tester) -> f64,
) -> f64 {
    let runs = total.div_ceil(HALF_TABLE);
    let mut ns = 0.0;
    for _ in 0..runs {
        t.empty_flow_table();
        prepare(t);
        ns += run(t);
    }
    ns / f64::from(runs)
}

/// Flows in `t`'s table, read in place.
pub(crate) fn tracked(t: &Tester) -> u64 {
    let mut n = 0;
    t.probe_ref()
        .flow_reader()
        .expect("flow reader")
        .for_each(|_, _| n += 1)
        .expect("scan");
    n
}

/// ns per read of a chain of dependent reads at random 64-byte lines of
/// `bytes` of memory in 4 KiB pages (as the kernel's map memory is): what a
/// cache and TLB miss costs on this machine.
pub(crate) fn random_read_ns(bytes: usize) -> f64 {
    const WORDS_PER_LINE: usize = 8;
    let lines = bytes / 64;
    // A random order of the lines (Fisher-Yates, xorshift), chained into
    // one cycle: each read gives the next line's index.
    let mut order: Vec<usize> = (0..lines).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..lines).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut memory = vec![0_usize; lines * WORDS_PER_LINE];
    for (i, &line) in order.iter().enumerate() {
        memory[line * WORDS_PER_LINE] = order[(i + 1) % lines] * WORDS_PER_LINE;
    }
    const READS: u32 = 2_000_000;
    let mut at = order[0] * WORDS_PER_LINE;
    let started = Instant::now();
    for _ in 0..READS {
        at = memory[at];
    }
    std::hint::black_box(at);
    started.elapsed().as_nanos() as f64 / f64::from(READS)
}

/// The agent's default flow table: the "empty table" and "full table" rows'.
pub(crate) const DEFAULT_TABLE: u32 = handshake_common::DEFAULT_FLOW_TABLE_SIZE;

/// Packets per test run in the rows that fill a default table from empty.
pub(crate) const HALF_TABLE: u32 = DEFAULT_TABLE / 2;

/// Room for `repeat` (<= 1M) new flows with the table at most half full.
pub(crate) const BIG_TABLE: u32 = 1 << 21;

#[derive(Clone, Copy)]
pub(crate) enum Hook {
    Ingress,
    Egress,
}
pub(crate) use Hook::{Egress, Ingress};

/// ns per run of the stepping program at `hook` (see the eBPF object's
/// `bench_stepped_ingress`): `repeat` runs, each on the next flow. Not
/// `ours`: the same runs with the step alone, the baseline.
pub(crate) fn stepped_run(
    clock: &TestRunClock,
    t: &mut Tester,
    hook: Hook,
    frame: &[u8],
    offset: u32,
    repeat: u32,
    ours: bool,
) -> f64 {
    let program = match hook {
        Ingress => bench_names::BENCH_STEPPED_INGRESS,
        Egress => bench_names::BENCH_STEPPED_EGRESS,
    };
    stepped_with(clock, t, hook, program, frame, offset, repeat, ours)
}

/// [`stepped_run`] with `program` (a stepping one) as ours.
#[expect(
    clippy::too_many_arguments,
    reason = "a benchmark's knobs, each used once"
)]
pub(crate) fn stepped_with(
    clock: &TestRunClock,
    t: &mut Tester,
    hook: Hook,
    program: &str,
    frame: &[u8],
    offset: u32,
    repeat: u32,
    ours: bool,
) -> f64 {
    let p = t.probe();
    p.set_bench_step(offset).expect("BENCH_STEP");
    match (hook, ours) {
        (Ingress, true) => clock.xdp_ns(p.bench_xdp(program).expect("xdp"), frame, repeat),
        (Ingress, false) => clock.xdp_ns(
            p.bench_xdp(bench_names::BENCH_STEP_XDP).expect("xdp"),
            frame,
            repeat,
        ),
        (Egress, true) => clock.tc_ns(p.bench_tc(program).expect("tc"), frame, repeat),
        (Egress, false) => clock.tc_ns(
            p.bench_tc(bench_names::BENCH_STEP_TC).expect("tc"),
            frame,
            repeat,
        ),
    }
}

pub(crate) fn stepped(
    clock: &TestRunClock,
    t: &mut Tester,
    hook: Hook,
    frame: &[u8],
    offset: u32,
    repeat: u32,
) -> f64 {
    stepped_run(clock, t, hook, frame, offset, repeat, true)
}

pub(crate) fn step_only(
    clock: &TestRunClock,
    t: &mut Tester,
    hook: Hook,
    frame: &[u8],
    offset: u32,
    repeat: u32,
) -> f64 {
    stepped_run(clock, t, hook, frame, offset, repeat, false)
}

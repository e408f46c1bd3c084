//! `cargo xtask bench [--quick]`: what handshake-monitor costs, each figure
//! a ratio or a difference against a baseline measured in the same run,
//! the median of interleaved runs. Prints a table and rewrites BENCHMARKS.md.
//!
//! B1 per packet (BPF_PROG_TEST_RUN) · B2 line rate on veth · B3 what users
//! pick instead (connections/s) · B4 flood survival · B5 the agent (scan,
//! CPU, memory, scrape latency) · B6 conservation (sent = counted).
//!
//! Traffic follows CONTRIBUTING.md's network safety rule: namespaces made
//! here, 198.18.0.0/15, no default route, deleted at the end.
use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use aya::programs::XdpMode;
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp};
use handshake_common::{
    counters::Counter,
    flow::{FlowKey, FlowState, Stage},
    map_names, program_names,
    table::{self, Bucket},
};
use handshake_tests::{
    agent::{Agent, binary},
    bench_object::{BenchPrograms as _, names as bench_names},
    cases::{ack, client, syn, synack, v4},
    dispatcher::DispatcherHold,
    metrics::Exposition,
    netns::{CLIENT_IF, Netns, SERVER_IF, SERVER_V4, Topology, ifindex},
    packet::{ACK, PSH, Packet},
    tester::Tester,
};
use handshake_user::{
    ingress::{Fallback, IngressPlan},
    probe::LoadOptions,
};

struct Settings {
    quick: bool,
    runs: usize,
    repeat: u32,
    seconds: f64,
}

/// One benchmark: adds its rows.
type Bench = fn(&Settings, &mut Vec<Row>);

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One result row.
struct Row {
    bench: &'static str,
    case: String,
    baseline: String,
    ours: String,
    figure: String,
    goal: String,
    verdict: &'static str,
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    }
}

fn data_segment(p: &Packet) -> Vec<u8> {
    p.clone()
        .flags(ACK | PSH)
        .seq(5)
        .ack(6)
        .payload(100)
        .build()
}

fn distinct_clients(n: usize, v6: bool, qinq: bool) -> Vec<Packet> {
    (0..n)
        .map(|i| {
            let (a, b) = ((i >> 8) as u8, i as u8);
            let mut p = if v6 {
                Packet::tcp(
                    IpAddr::from([0x2001, 2, 0, 0, 0, 0, a.into(), b.into()]),
                    1024 + (i % 50000) as u16,
                    IpAddr::from([0x2001, 2, 0, 0, 0, 0, 0, 2]),
                    443,
                )
            } else {
                Packet::tcp(
                    IpAddr::from([198, 19, a, b]),
                    1024 + (i % 50000) as u16,
                    v4(2),
                    80,
                )
            };
            if qinq {
                p = p.qinq(10, 20);
            }
            p
        })
        .collect()
}

/// Times test runs: ns per run, from this thread's CPU time over the call.
///
/// Not the kernel's own `duration`: that is whole ns (it divides and
/// truncates), so a difference of two is off by up to 1 ns and a median of
/// such differences is a whole number, against goals of 10 ns. The thread's
/// CPU clock has ns resolution over a call of some 30 ms, and leaves out
/// time the hypervisor took the vCPU away (steal time), which the kernel's
/// wall-clock `duration` counts. What the call costs besides the runs (the
/// frame's copy in and out, the context: 4 to 40 us) is a few thousandths
/// of a ns a run at 1M runs, about 1 ns at 32768, the same for both
/// programs of a pair. An XDP call would
/// also change the kernel's XDP dispatcher twice (0.25-0.9 ms, unevenly):
/// the program is kept in it instead (see `handshake_tests::dispatcher`).
struct TestRunClock {
    hold: DispatcherHold,
}

impl TestRunClock {
    fn new() -> Self {
        Self {
            hold: DispatcherHold::new()
                .expect("a namespace to keep XDP programs in the dispatcher"),
        }
    }

    fn xdp_ns(&self, prog: &Xdp, frame: &[u8], repeat: u32) -> f64 {
        self.hold
            .keep(prog)
            .expect("keep the program in the XDP dispatcher");
        ns_per_run(repeat, || {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .expect("test run");
        })
    }

    fn tc_ns(&self, prog: &SchedClassifier, frame: &[u8], repeat: u32) -> f64 {
        ns_per_run(repeat, || {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .expect("test run");
        })
    }
}

/// ns per run of `call`, `repeat` runs, in this thread's CPU time.
fn ns_per_run(repeat: u32, call: impl FnOnce()) -> f64 {
    let start = thread_cpu_ns();
    call();
    (thread_cpu_ns() - start) as f64 / f64::from(repeat)
}

/// This thread's CPU time, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn unlimited(flow_table_size: u32) -> LoadOptions {
    LoadOptions {
        flow_table_size,
        syn_insert_budget: u64::MAX,
        ..LoadOptions::default()
    }
}

/// B1: ns per packet over the empty program, for one case. `measure(ours)`
/// returns ns per packet for one run of ours (true) or the baseline.
fn b1_case(
    s: &Settings,
    rows: &mut Vec<Row>,
    case: &str,
    goal_ns: Option<f64>,
    measure: impl FnMut(bool) -> f64,
) {
    b1_case_runs(s.runs, rows, case, goal_ns, measure);
}

fn b1_case_runs(
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
fn b1_cases_in_rounds(
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
fn b1_pair(i: usize, measure: &mut impl FnMut(bool) -> f64) -> (f64, f64) {
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
fn b1_row(rows: &mut Vec<Row>, case: &str, goal_ns: Option<f64>, pairs: &[(f64, f64)]) {
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

fn b1(s: &Settings, rows: &mut Vec<Row>) {
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
            Some(250.0),
            Ingress,
            bench_names::BENCH_STEPPED_INGRESS,
            syn(&client(), 7),
            ipv4_src,
        ),
        case(
            "SYN into an empty table (new flow), IPv6",
            Some(250.0),
            Ingress,
            bench_names::BENCH_STEPPED_INGRESS,
            syn(&v6, 7),
            v6_src_last_word,
        ),
        case(
            "SYN into an empty table (new flow), QinQ",
            Some(250.0),
            Ingress,
            bench_names::BENCH_STEPPED_INGRESS,
            syn(&client().qinq(10, 20), 7),
            qinq_ipv4_src,
        ),
        case(
            "outbound SYN, new flow, egress (TC)",
            Some(250.0),
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
struct SteppedCase {
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
fn in_half_tables(
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
fn tracked(t: &Tester) -> u64 {
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
fn random_read_ns(bytes: usize) -> f64 {
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

/// Keeps the calling thread on the last CPU it may use, until dropped. A
/// test run stays on one CPU anyway; pinned, every run of a case uses the
/// same one (and not CPU 0, which takes most interrupts), and runs no longer
/// differ by where the scheduler put them.
struct PinnedToLastCpu(Option<libc::cpu_set_t>);

impl PinnedToLastCpu {
    fn new() -> Self {
        // SAFETY: cpu_set_t is plain bits, zero is a valid empty set; the
        // calls get its real size.
        unsafe {
            let mut allowed: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
                return Self(None);
            }
            let Some(last) = (0..libc::CPU_SETSIZE as usize)
                .rev()
                .find(|&c| libc::CPU_ISSET(c, &allowed))
            else {
                return Self(None);
            };
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(last, &mut one);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) != 0 {
                return Self(None);
            }
            Self(Some(allowed))
        }
    }
}

impl Drop for PinnedToLastCpu {
    fn drop(&mut self) {
        if let Some(allowed) = &self.0 {
            // SAFETY: a set sched_getaffinity filled in.
            unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), allowed) };
        }
    }
}

/// The agent's default flow table: the "empty table" and "full table" rows'.
const DEFAULT_TABLE: u32 = handshake_common::DEFAULT_FLOW_TABLE_SIZE;
/// Packets per test run in the rows that fill a default table from empty.
const HALF_TABLE: u32 = DEFAULT_TABLE / 2;
/// Room for `repeat` (<= 1M) new flows with the table at most half full.
const BIG_TABLE: u32 = 1 << 21;

#[derive(Clone, Copy)]
enum Hook {
    Ingress,
    Egress,
}
use Hook::{Egress, Ingress};

/// ns per run of the stepping program at `hook` (see the eBPF object's
/// `bench_stepped_ingress`): `repeat` runs, each on the next flow. Not
/// `ours`: the same runs with the step alone, the baseline.
fn stepped_run(
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
fn stepped_with(
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

fn stepped(
    clock: &TestRunClock,
    t: &mut Tester,
    hook: Hook,
    frame: &[u8],
    offset: u32,
    repeat: u32,
) -> f64 {
    stepped_run(clock, t, hook, frame, offset, repeat, true)
}

fn step_only(
    clock: &TestRunClock,
    t: &mut Tester,
    hook: Hook,
    frame: &[u8],
    offset: u32,
    repeat: u32,
) -> f64 {
    stepped_run(clock, t, hook, frame, offset, repeat, false)
}

/// Loads and attaches, in `ns` on `dev`, our two programs (ingress as
/// `plan` says, and TC egress) or else the empty XDP program alone (native),
/// until the returned sender is dropped.
fn attach_in(ns: &Netns, dev: &'static str, ours: bool, plan: IngressPlan) -> mpsc::Sender<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    ns.spawn(move || {
        let mut probe = handshake_tests::bench_object::load(&LoadOptions::default()).expect("load");
        // Not interfaces::by_name: it reads /sys/class/net (see `ifindex`).
        let index = ifindex(dev);
        let iface = handshake_user::interfaces::Interface {
            name: dev.to_owned(),
            index,
            loopback: false,
        };
        let _links = if ours {
            let x = probe.attach_ingress(&iface, plan).expect("attach ingress");
            let t = probe.attach_egress(&iface).expect("attach tc");
            (Some(x), Some(t))
        } else {
            let prog = probe.baseline_xdp().expect("baseline");
            prog.attach_to_if_index(index, XdpMode::Driver)
                .expect("attach baseline");
            (None, None)
        };
        ready_tx.send(()).expect("ready");
        let _ = stop_rx.recv();
        drop(_links);
        drop(probe);
    });
    ready_rx.recv().expect("attached");
    stop_tx
}

/// Attaches the empty programs in `ns` on `dev`, until the returned sender
/// is dropped: what the hooks cost with nothing in them. Ingress on TC (as
/// the agent attaches its own on a veth) or on generic XDP; egress on TCX.
fn attach_empty_hooks_in(ns: &Netns, dev: &'static str, xdp: bool) -> mpsc::Sender<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    ns.spawn(move || {
        let mut probe = handshake_tests::bench_object::load(&LoadOptions::default()).expect("load");
        if xdp {
            let prog = probe.baseline_xdp().expect("baseline xdp");
            prog.attach_to_if_index(ifindex(dev), XdpMode::Skb)
                .expect("attach baseline xdp");
        } else {
            let tc = probe.baseline_tc().expect("baseline tc");
            tc.attach(dev, aya::programs::TcAttachType::Ingress)
                .expect("attach baseline tc ingress");
        }
        let tc = probe.baseline_tc().expect("baseline tc");
        tc.attach(dev, aya::programs::TcAttachType::Egress)
            .expect("attach baseline tc egress");
        ready_tx.send(()).expect("ready");
        let _ = stop_rx.recv();
        // Dropping the programs detaches them.
        drop(probe);
    });
    ready_rx.recv().expect("attached");
    stop_tx
}

/// (rx_packets, rx_dropped) of `dev` in `ns`.
fn rx_stats(ns: &Netns, dev: &str) -> (u64, u64) {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-j", "-s", "link", "show", dev])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let rx = &text[text.find("\"rx\":{").expect("rx stats")..];
    let field = |k: &str| -> u64 {
        let at = rx.find(&format!("\"{k}\":")).expect("field") + k.len() + 3;
        rx[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("packets"), field("dropped"))
}

/// Sends `frames` (cycled) out of the client's c0 with sendmmsg for
/// `seconds`; returns how many were sent.
fn blast(topo: &Topology, frames: Arc<Vec<Vec<u8>>>, seconds: f64) -> u64 {
    topo.client.run(move || {
        let ifindex = ifindex(CLIENT_IF);
        // SAFETY: socket calls with valid buffers; the iovecs and headers
        // point into `frames`, which outlives the calls.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            assert_eq!(
                libc::bind(
                    fd,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32
                ),
                0
            );
            // Bypass the qdisc: measure the receiver, not the sender's queue.
            let one: i32 = 1;
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                20, /* PACKET_QDISC_BYPASS */
                (&one as *const i32).cast(),
                4,
            );
            const BATCH: usize = 64;
            let mut iovs: Vec<libc::iovec> = frames
                .iter()
                .map(|f| libc::iovec {
                    iov_base: f.as_ptr() as *mut _,
                    iov_len: f.len(),
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    let mut m: libc::mmsghdr = std::mem::zeroed();
                    m.msg_hdr.msg_iov = iov;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mut sent = 0u64;
            let mut at = 0usize;
            while Instant::now() < deadline {
                let n = BATCH.min(msgs.len() - at);
                let r = libc::sendmmsg(fd, msgs.as_mut_ptr().add(at), n as u32, 0);
                if r > 0 {
                    sent += r as u64;
                }
                at = (at + n) % msgs.len();
            }
            libc::close(fd);
            sent
        }
    })
}

fn quiet_topology() -> Topology {
    Topology::ipv4_only()
}

/// Frames addressed to a MAC that is not the server's: the stack drops
/// them right after XDP, so the receiver's cost is XDP's.
fn otherhost(mut frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    for f in &mut frames {
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    }
    frames
}

fn b2(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!(
        "B2 line rate on veth (native XDP), {} x {:.0} s per program",
        s.runs, s.seconds
    );
    let established = Arc::new(otherhost(
        (0..256)
            .map(|i| data_segment(&Packet::tcp(v4(1), 40000 + i, v4(2), 80)))
            .collect(),
    ));
    let flood = Arc::new(otherhost(
        distinct_clients(65536, false, false)
            .iter()
            .map(|c| syn(c, 1).build())
            .collect(),
    ));
    for (name, frames, goal) in [
        ("established traffic", established, 0.90),
        ("random-source SYN flood", flood, 0.75),
    ] {
        let topo = quiet_topology();
        let (mut base, mut ours, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..s.runs {
            let mut pps = [0.0; 2];
            for (i, is_ours) in [false, true].into_iter().enumerate() {
                let stop = attach_in(
                    &topo.server,
                    SERVER_IF,
                    is_ours,
                    IngressPlan::Xdp {
                        mode: XdpMode::Driver,
                        fallback: Fallback::None,
                    },
                );
                let (rx0, drop0) = rx_stats(&topo.server, SERVER_IF);
                let t0 = Instant::now();
                blast(&topo, Arc::clone(&frames), s.seconds);
                let elapsed = t0.elapsed().as_secs_f64();
                thread::sleep(Duration::from_millis(100));
                let (rx1, drop1) = rx_stats(&topo.server, SERVER_IF);
                drop(stop);
                pps[i] = (rx1 - rx0).saturating_sub(drop1 - drop0) as f64 / elapsed;
            }
            base.push(pps[0]);
            ours.push(pps[1]);
            ratio.push(pps[1] / pps[0]);
        }
        let r = median(&mut ratio);
        rows.push(Row {
            bench: "B2",
            case: name.to_owned(),
            baseline: format!("{:.0} kpps", median(&mut base) / 1e3),
            ours: format!("{:.0} kpps", median(&mut ours) / 1e3),
            figure: format!("{r:.3}x"),
            goal: format!(">= {goal:.2}x"),
            verdict: verdict(Some(r >= goal)),
        });
        eprintln!("  B2 {name}: {r:.3}x");
    }
}

/// Connections per second from one client thread, for `seconds`.
fn connect_rate(topo: &Topology, seconds: f64) -> f64 {
    let (connections, elapsed) = connect_for(topo, seconds);
    connections as f64 / elapsed
}

/// [`connect_rate`], and the whole machine's busy CPU time per connection
/// over the same run, in us (see [`HostCpu`]).
fn connect_run(topo: &Topology, seconds: f64) -> (f64, f64) {
    let before = HostCpu::now();
    let (connections, elapsed) = connect_for(topo, seconds);
    let busy_us = HostCpu::now().busy_us_since(&before);
    (
        connections as f64 / elapsed,
        busy_us / connections.max(1) as f64,
    )
}

/// The machine's CPUs' time, to tell busy from idle: wall-clock time, idle
/// time (every CPU's cpuidle states, in us) and steal time (/proc/stat, in
/// ticks: time the hypervisor ran something else, neither busy nor idle
/// for us).
struct HostCpu {
    wall: Instant,
    idle_us: u64,
    steal_us: u64,
    cpus: u64,
}

impl HostCpu {
    fn now() -> Self {
        let mut idle_us = 0;
        let mut cpus = 0;
        let mut cpuidle = false;
        for cpu in std::fs::read_dir("/sys/devices/system/cpu")
            .expect("/sys/devices/system/cpu")
            .flatten()
        {
            let name = cpu.file_name().to_string_lossy().into_owned();
            if !name
                .strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                continue;
            }
            cpus += 1;
            let Ok(states) = std::fs::read_dir(cpu.path().join("cpuidle")) else {
                continue;
            };
            for state in states.flatten() {
                if let Ok(time) = std::fs::read_to_string(state.path().join("time")) {
                    idle_us += time.trim().parse::<u64>().unwrap_or(0);
                    cpuidle = true;
                }
            }
        }
        // The whole machine's line: user nice system idle iowait irq
        // softirq steal ..., in ticks.
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let tick = |i: usize| ticks.get(i).copied().unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let us_per_tick = 1_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        if !cpuidle {
            // No cpuidle driver: idle and iowait ticks, coarser.
            idle_us = (tick(3) + tick(4)) * us_per_tick;
        }
        Self {
            wall: Instant::now(),
            idle_us,
            steal_us: tick(7) * us_per_tick,
            cpus,
        }
    }

    /// CPU time, in us, that the machine spent busy since `before`.
    fn busy_us_since(&self, before: &Self) -> f64 {
        let wall_us = self.wall.duration_since(before.wall).as_secs_f64() * 1e6 * self.cpus as f64;
        let idle = self.idle_us.saturating_sub(before.idle_us) as f64;
        let steal = self.steal_us.saturating_sub(before.steal_us) as f64;
        (wall_us - idle - steal).max(0.0)
    }
}

/// Connections made from one client thread in `seconds`, and the seconds
/// they took.
fn connect_for(topo: &Topology, seconds: f64) -> (u64, f64) {
    let target: SocketAddr = format!("{SERVER_V4}:7000").parse().expect("addr");
    topo.client.run(move || {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut n = 0u64;
        while Instant::now() < deadline {
            let s = TcpStream::connect(target).expect("connect");
            // An abortive close: no TIME_WAIT to run out of ports.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setting SO_LINGER on our own socket.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    size_of::<libc::linger>() as u32,
                );
            }
            drop(s);
            n += 1;
        }
        (n, start.elapsed().as_secs_f64())
    })
}

/// The discarded run before each measured one in B3.
const SETTLE_SECONDS: f64 = 0.3;

fn b3(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!("B3 connections/s through the normal stack: none, ours, tcpdump, nf_conntrack");
    let topo = Topology::new();
    let server = Server::start(&topo);
    let configs = [
        "no monitor",
        "handshake-monitor",
        "tcpdump (SYN filter)",
        "nf_conntrack",
        "handshake-monitor, native XDP (--xdp-mode driver)",
        "handshake-monitor, generic XDP (--ingress-hook xdp)",
        "empty programs on TC ingress and egress: the agent's hooks alone",
        "empty programs on generic XDP and TC egress: those hooks alone",
        "our programs alone (TC ingress and egress), no agent process",
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    // Three times the rounds, each a third as long: the same seconds, but
    // each configuration is compared with a no-monitor run a few seconds
    // away, not half a minute, and this machine's speed drifts by more
    // than the differences measured here over half a minute.
    // `--quick` keeps the short rounds but not their number: it must stay
    // a quick look.
    let (rounds, seconds) = (if s.quick { s.runs } else { 3 * s.runs }, s.seconds / 3.0);
    for run in 0..rounds {
        // Rotate the order each round: no configuration always goes first.
        for k in 0..configs.len() {
            let i = (k + run) % configs.len();
            let config = &configs[i];
            let mut agent: Option<Agent> = None;
            let mut child: Option<Child> = None;
            let mut attached: Option<mpsc::Sender<()>> = None;
            match i {
                1 => agent = Some(Agent::start(&topo.server, &["--iface", SERVER_IF])),
                4 => {
                    agent = Some(Agent::start(
                        &topo.server,
                        &["--iface", SERVER_IF, "--xdp-mode", "driver"],
                    ))
                }
                5 => {
                    agent = Some(Agent::start(
                        &topo.server,
                        &["--iface", SERVER_IF, "--ingress-hook", "xdp"],
                    ))
                }
                2 => {
                    let mut c = Command::new("ip")
                        .args([
                            "netns",
                            "exec",
                            &topo.server.name,
                            "tcpdump",
                            "-i",
                            SERVER_IF,
                            "-w",
                            "/dev/null",
                            "tcp[tcpflags] & tcp-syn != 0",
                        ])
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("tcpdump");
                    let mut buf = [0u8; 256];
                    let _ = c.stderr.as_mut().expect("stderr").read(&mut buf);
                    child = Some(c);
                }
                3 => {
                    let rules = "table inet hm_ct {\n chain in {\n  type filter hook input priority 0;\n  ct state established,related accept\n }\n}\n";
                    let mut c = Command::new("ip")
                        .args(["netns", "exec", &topo.server.name, "nft", "-f", "-"])
                        .stdin(Stdio::piped())
                        .spawn()
                        .expect("nft");
                    c.stdin
                        .take()
                        .expect("stdin")
                        .write_all(rules.as_bytes())
                        .expect("rules");
                    assert!(c.wait().expect("nft").success(), "conntrack rules");
                }
                6 => attached = Some(attach_empty_hooks_in(&topo.server, SERVER_IF, false)),
                7 => attached = Some(attach_empty_hooks_in(&topo.server, SERVER_IF, true)),
                8 => attached = Some(attach_in(&topo.server, SERVER_IF, true, IngressPlan::Tc)),
                _ => {}
            }
            // Settle: a short discarded run first, so that neither the set-up
            // (an agent loading, tcpdump opening its socket) nor the previous
            // configuration's tear-down lands in the measured seconds.
            let _ = connect_rate(&topo, SETTLE_SECONDS);
            let (rate, cpu_us) = connect_run(&topo, seconds);
            results[i].push(rate);
            cpu[i].push(cpu_us);
            drop(agent);
            drop(attached);
            if let Some(mut c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
            if i == 3 {
                let _ = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &topo.server.name,
                        "nft",
                        "delete",
                        "table",
                        "inet",
                        "hm_ct",
                    ])
                    .status();
            }
            let _ = config;
        }
    }
    // In situ: what each program run costs on this path, by the kernel's
    // own run-time statistics, in one more run each (statistics cost two
    // clock reads per run, so never during the rounds above): our programs
    // under the agent against the empty ones attached the same way.
    let in_situ = |ours: bool| -> (f64, f64) {
        let agent = ours.then(|| Agent::start(&topo.server, &["--iface", SERVER_IF]));
        let attached = (!ours).then(|| attach_empty_hooks_in(&topo.server, SERVER_IF, false));
        let names: &[&str] = if ours {
            AGENT_PROGRAMS
        } else {
            &[bench_names::BASELINE_TC]
        };
        let measured = program_time(&topo, names, s.seconds);
        drop((agent, attached));
        measured
    };
    let (ours_ns, ours_runs) = in_situ(true);
    let (empty_ns, _) = in_situ(false);
    let in_situ_row = Row {
        bench: "B3",
        case: "in situ: run time per program run (kernel.bpf_stats_enabled), our programs under the agent".to_owned(),
        baseline: format!("{empty_ns:.0} ns (empty programs)"),
        ours: format!("{ours_ns:.0} ns ({ours_runs:.1} runs per connection)"),
        figure: format!("+{:.0} ns per run, +{:.2} us per connection", ours_ns - empty_ns, (ours_ns - empty_ns) * ours_runs / 1e3),
        goal: "(contrast)".to_owned(),
        verdict: "-",
    };
    eprintln!("  B3 in situ: ours {ours_ns:.0} ns per run, empty {empty_ns:.0} ns");
    server.stop(&topo);
    let none = median(&mut results[0].clone());
    // Each round's rate over that round's no-monitor rate: the comparisons
    // are made on these, paired by round.
    let ratios_of = |i: usize| -> Vec<f64> {
        results[i]
            .iter()
            .zip(&results[0])
            .map(|(x, b)| x / b)
            .collect()
    };
    // The machine's busy CPU time per connection, all CPUs: what each
    // monitor costs the host, wherever it runs (tcpdump's own process runs
    // on another CPU than the connections, and a rate may not see it).
    let cpu_none = median(&mut cpu[0].clone());
    let cpu_rows: Vec<Row> = (1..=3)
        .map(|i| {
            let mut extra: Vec<f64> = cpu[i].iter().zip(&cpu[0]).map(|(x, b)| x - b).collect();
            let extra = median(&mut extra);
            eprintln!(
                "  B3 host CPU, {}: {extra:+.2} us per connection over no monitor",
                configs[i]
            );
            Row {
                bench: "B3",
                case: format!(
                    "host CPU per connection (busy time of all CPUs), {}",
                    configs[i]
                ),
                baseline: format!("{cpu_none:.1} us (no monitor)"),
                ours: format!("{:.1} us", median(&mut cpu[i].clone())),
                figure: format!("{extra:+.2} us (paired by round)"),
                goal: "(contrast)".to_owned(),
                verdict: "-",
            }
        })
        .collect();
    for (i, config) in configs.iter().enumerate().skip(1) {
        let mut ratios = ratios_of(i);
        let r = median(&mut ratios);
        // `median` sorted them: the spread between rounds, to read the
        // differences between configurations against.
        let (lo, hi) = (
            ratios.first().copied().unwrap_or(f64::NAN),
            ratios.last().copied().unwrap_or(f64::NAN),
        );
        let mut figure = format!("{r:.3}x (rounds {lo:.2}-{hi:.2})");
        let (goal, ok) = if i == 1 {
            (">= 0.90x".to_owned(), Some(r >= 0.90))
        } else if i >= 4 {
            ("(contrast)".to_owned(), None)
        } else {
            // Ours against this monitor round by round: the rotation runs
            // the two one or two runs apart, where each one's ratio to the
            // no-monitor run can be most of a round away from the other's.
            let mut ahead: Vec<f64> = results[1]
                .iter()
                .zip(&results[i])
                .map(|(o, x)| o / x)
                .collect();
            let ahead = median(&mut ahead);
            write!(figure, "; ours/this {ahead:.3}x").expect("write to a String");
            (
                "ours ahead: ours/this >= 1 (paired by round)".to_owned(),
                Some(ahead >= 1.0),
            )
        };
        rows.push(Row {
            bench: "B3",
            case: (*config).to_owned(),
            baseline: format!("{none:.0} conn/s"),
            ours: format!("{:.0} conn/s", median(&mut results[i].clone())),
            figure,
            goal,
            verdict: verdict(ok),
        });
        eprintln!("  B3 {config}: {r:.3}x of no monitor (rounds {lo:.2}-{hi:.2})");
    }
    rows.push(in_situ_row);
    rows.extend(cpu_rows);
}

/// A server in `topo`'s server namespace accepting (and at once closing)
/// connections on port 7000, until [`Server::stop`].
struct Server {
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(topo: &Topology) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stopping = Arc::clone(&stop);
        topo.server.spawn(move || {
            let l = TcpListener::bind((SERVER_V4, 7000)).expect("bind");
            // A deep accept queue, drained by a thread that blocks in accept:
            // with a short queue (std's 128) and a server that napped when it
            // was empty, a descheduled server let the queue fill, the
            // listener dropped SYNs, and the client's 1 s SYN retransmission
            // turned a round into an outlier at a quarter of the rate.
            // SAFETY: listen(2) again on our own listening socket only sets
            // its backlog.
            let ok = unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 4096) } == 0;
            assert!(ok, "listen backlog");
            tx.send(()).expect("ready");
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((s, _)) = l.accept() {
                    drop(s);
                }
            }
        });
        rx.recv().expect("ready");
        Self { stop }
    }

    fn stop(self, topo: &Topology) {
        self.stop.store(true, Ordering::Relaxed);
        // One more connection wakes the server out of accept to see `stop`.
        topo.client
            .run(|| drop(TcpStream::connect((SERVER_V4, 7000))));
    }
}

/// The agent's programs, as the kernel names them.
const AGENT_PROGRAMS: &[&str] = &[
    program_names::XDP_INGRESS,
    program_names::TC_INGRESS,
    program_names::TC_EGRESS,
];

/// What the programs named `names`, attached in `topo`'s server namespace,
/// cost per run, by the kernel's own run-time statistics, over `seconds` of
/// connections (after a discarded settling run): (ns per run, runs per
/// connection). The statistics cost two clock reads per run, so they are
/// on only here.
fn program_time(topo: &Topology, names: &[&str], seconds: f64) -> (f64, f64) {
    let _ = connect_rate(topo, SETTLE_SECONDS);
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let before = run_stats(names);
    let rate = connect_rate(topo, seconds);
    let after = run_stats(names);
    drop(stats);
    let (runs, ns) = after.iter().fold((0, 0), |(r, n), (id, (ar, an))| {
        let (br, bn) = before.get(id).copied().unwrap_or_default();
        (r + ar - br, n + an - bn)
    });
    (
        ns as f64 / runs.max(1) as f64,
        runs as f64 / (rate * seconds),
    )
}

/// `cargo xtask bench --compare OLD NEW`: the kernel programs of two builds
/// of the agent, in situ (B3's path: connections through the normal stack,
/// the agent on the server's veth), `rounds` times each, alternating which
/// goes first. Prints program time per connection for each and the median
/// of the rounds' differences; writes nothing.
fn compare(bins: &[PathBuf], rounds: usize, seconds: f64) {
    let [old, new] = bins else {
        panic!("--compare takes two agent binaries")
    };
    for bin in [old, new] {
        assert!(bin.exists(), "{}: no such agent binary", bin.display());
    }
    eprintln!("in situ, {rounds} rounds of {seconds} s each: ns of program time per connection");
    let topo = Topology::new();
    let server = Server::start(&topo);
    let (mut per_conn, mut diffs) = ([Vec::new(), Vec::new()], Vec::new());
    for round in 0..rounds {
        let mut this = [0.0; 2];
        for k in 0..2 {
            let i = (k + round) % 2;
            let agent = Agent::start_binary(&bins[i], &topo.server, &["--iface", SERVER_IF]);
            let (ns_per_run, runs_per_conn) = program_time(&topo, AGENT_PROGRAMS, seconds);
            drop(agent);
            this[i] = ns_per_run * runs_per_conn;
            per_conn[i].push(this[i]);
        }
        diffs.push(this[1] - this[0]);
        eprintln!(
            "  round {}: old {:.0} ns, new {:.0} ns, new - old {:+.0} ns",
            round + 1,
            this[0],
            this[1],
            this[1] - this[0]
        );
    }
    server.stop(&topo);
    let (o, n, d) = (
        median(&mut per_conn[0]),
        median(&mut per_conn[1]),
        median(&mut diffs),
    );
    let (lo, hi) = (
        diffs.first().copied().unwrap_or(f64::NAN),
        diffs.last().copied().unwrap_or(f64::NAN),
    );
    println!("old {}: {o:.0} ns per connection", old.display());
    println!("new {}: {n:.0} ns per connection", new.display());
    println!(
        "new - old: {d:+.0} ns per connection (median of {rounds} rounds; rounds {lo:+.0} .. {hi:+.0})"
    );
}

/// (runs, ns running) of every loaded program named one of `names`, by
/// program id. The kernel keeps 15 characters of a program's name.
fn run_stats(names: &[&str]) -> std::collections::HashMap<u32, (u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| names.iter().any(|w| w.get(..15).unwrap_or(w) == n))
        })
        .map(|p| (p.id(), (p.run_count(), p.run_time().as_nanos() as u64)))
        .collect()
}

fn b4(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!(
        "B4 flood survival (BPF_PROG_TEST_RUN): real handshakes while 10x the table's capacity in random-source SYNs arrives"
    );
    let capacity = 16384usize;
    let flood: Vec<Vec<u8>> = distinct_clients(capacity * 10, false, false)
        .iter()
        .map(|c| syn(&c.clone().vlan(7), 1).build())
        .collect();
    let real: Vec<Packet> = (0..200u16)
        .map(|i| Packet::tcp(v4(1), 20000 + i, v4(2), 80))
        .collect();
    // A server answers a SYN at once; the client's final ACK comes one
    // round trip later, during which `wait` flood SYNs arrive. The last
    // case is the hard one: the SYN-ACK too comes only after the wait (a
    // slow server, or an outbound SYN to a far peer), so nothing marks the
    // real entry as used while the flood goes by.
    let budget = LoadOptions {
        flow_table_size: capacity as u32,
        syn_insert_budget: 16_384,
        ..LoadOptions::default()
    };
    let default = LoadOptions {
        flow_table_size: capacity as u32,
        ..LoadOptions::default()
    };
    let cases = [
        ("a quarter of the table", capacity / 4, false),
        ("the whole table", capacity, false),
        ("twice the table", 2 * capacity, false),
        ("the whole table", capacity, true),
    ];
    for (wait_label, wait, late_synack) in cases {
        for (label, options, graded) in [
            ("default (no insert budget)", default, !late_synack),
            ("--syn-insert-budget 16384", budget, false),
        ] {
            let mut fractions = Vec::new();
            for _ in 0..s.runs {
                let mut t = Tester::bench_with(&options);
                let every = flood.len() / real.len();
                let mut open: std::collections::VecDeque<(usize, &Packet)> =
                    std::collections::VecDeque::new();
                for (i, f) in flood.iter().enumerate() {
                    if i % every == 0 && i / every < real.len() {
                        let c = &real[i / every];
                        t.ingress(&syn(c, 5).build());
                        if !late_synack {
                            t.egress(&synack(c, 9, 6).build());
                        }
                        open.push_back((i, c));
                    }
                    t.ingress(f);
                    while open.front().is_some_and(|(at, _)| i - at >= wait) {
                        let (_, c) = open.pop_front().expect("open");
                        if late_synack {
                            t.egress(&synack(c, 9, 6).build());
                        }
                        t.ingress(&ack(c, 6, 10).build());
                    }
                }
                for (_, c) in open {
                    if late_synack {
                        t.egress(&synack(c, 9, 6).build());
                    }
                    t.ingress(&ack(c, 6, 10).build());
                }
                let c = t.counters();
                let completed = c.get(
                    handshake_common::counters::Family::Ipv4,
                    handshake_common::counters::Direction::Inbound,
                    Counter::Completed,
                );
                fractions.push(completed as f64 / real.len() as f64);
            }
            let f = median(&mut fractions);
            rows.push(Row {
                bench: "B4",
                case: format!(
                    "{label}, {} after {wait_label} in flood SYNs",
                    if late_synack {
                        "SYN-ACK and final ACK"
                    } else {
                        "final ACK"
                    }
                ),
                baseline: "-".to_owned(),
                ours: format!("{:.1} % completed", f * 100.0),
                figure: format!("{:.1} %", f * 100.0),
                goal: if graded {
                    ">= 99 %".to_owned()
                } else {
                    "(contrast)".to_owned()
                },
                verdict: if graded {
                    verdict(Some(f >= 0.99))
                } else {
                    "-"
                },
            });
            eprintln!(
                "  B4 {label}, wait {wait}, late SYN-ACK {late_synack}: {:.1} %",
                f * 100.0
            );
        }
    }
}

/// `n` half-open flows, distinct, as many as a fill may need.
fn half_open_flows(second_word: u32, syn_ns: u64) -> impl Iterator<Item = (FlowKey, FlowState)> {
    (0..u32::MAX).map(move |i| {
        let key = FlowKey::new(
            [i, second_word, 0, 0],
            [7, 0, 0, 0],
            (i % 60000) as u16,
            80,
            0,
        );
        (
            key,
            FlowState {
                syn_ns,
                client_isn: i,
                stage: Stage::SynSent as u8,
                ..FlowState::default()
            },
        )
    })
}

/// Fills the table to `n` flows (its whole capacity, for the B5 sizes).
fn fill_flows(t: &mut Tester, n: usize) {
    let now = handshake_user::run::monotonic_ns();
    assert_eq!(
        t.probe()
            .fill_flow_table(half_open_flows(1, now), n)
            .expect("fill"),
        n
    );
}

fn proc_stat(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // utime, stime are fields 14 and 15 (1-based), i.e. 11 and 12 after ')'.
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    // RssAnon: the agent's own memory. VmRSS would also count the pages of
    // the flow table's shared mapping that a scan in progress holds (the
    // kernel's memory, mapped for the scan): a figure that swung by the
    // table's size with when it was sampled. VmHWM, the peak, counts them.
    (ticks as f64 / 100.0, kb("RssAnon:"), kb("VmHWM:"))
}

fn agent_pid(ns: &Netns) -> u32 {
    let out = Command::new("ip")
        .args(["netns", "pids", &ns.name])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|e| e == binary() || e.ends_with("handshake-monitor"))
        })
        .expect("agent pid")
}

fn b5(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!("B5 the agent: flow-table scans, CPU, memory, scrape latency");
    let sizes: &[usize] = if s.quick {
        &[65536, 262_144]
    } else {
        &[65536, 262_144, 1 << 20]
    };
    for &n in sizes {
        let mut t = Tester::bench_with(&unlimited(n as u32));
        fill_flows(&mut t, n);
        let (mut batched, mut single, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        let reader = t.probe().flow_reader().expect("flow reader");
        for _ in 0..s.runs {
            // Both sides visit every flow and count it: the agent's scan
            // (`run.rs`) feeds each to its summary the same way.
            let t0 = Instant::now();
            let mut a = 0;
            reader.for_each(|_, _| a += 1).expect("in-place scan");
            let b_time = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let mut b = 0;
            t.for_each_flow(|_, _| b += 1);
            let s_time = t1.elapsed().as_secs_f64();
            assert_eq!((a, b), (n, n));
            batched.push(b_time);
            single.push(s_time);
            ratio.push(s_time / b_time);
        }
        let r = median(&mut ratio);
        rows.push(Row {
            bench: "B5",
            case: format!("flow-table scan, {} entries", n),
            baseline: format!("{:.0} ms one at a time", median(&mut single) * 1e3),
            ours: format!("{:.0} ms in place (mmap)", median(&mut batched) * 1e3),
            figure: format!("{r:.1}x faster"),
            goal: ">= 5x".to_owned(),
            verdict: verdict(Some(r >= 5.0)),
        });
        eprintln!("  B5 scan {n}: {r:.1}x");
    }
    // The running agent at a full table, against itself at an empty one.
    let n = if s.quick { 262_144 } else { 1 << 20 };
    let bpffs = std::env::temp_dir().join(format!("hm-bench-bpffs-{}", std::process::id()));
    std::fs::create_dir_all(&bpffs).expect("dir");
    assert!(
        Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpffs)
            .status()
            .expect("mount")
            .success()
    );
    let pin = bpffs.join("hm");
    let ns = Netns::new("bench-agent");
    let size = n.to_string();
    let pin_s = pin.display().to_string();
    let measure = |agent: &Agent| {
        let pid = agent_pid(&ns);
        let (cpu0, _, _) = proc_stat(pid);
        let t0 = Instant::now();
        let mut lat = Vec::new();
        let mut series = 0;
        for _ in 0..100 {
            let a = Instant::now();
            let e: Exposition = agent.scrape(&ns);
            lat.push(a.elapsed().as_secs_f64());
            series = e.text.lines().filter(|l| !l.starts_with('#')).count();
            thread::sleep(Duration::from_millis(40));
        }
        let (cpu1, rss, hwm) = proc_stat(pid);
        lat.sort_by(f64::total_cmp);
        let p99 = lat[lat.len() * 99 / 100 - 1];
        (
            (cpu1 - cpu0) / t0.elapsed().as_secs_f64(),
            rss,
            hwm,
            p99,
            series,
        )
    };
    let args = [
        "--iface",
        "lo",
        "--flow-table-size",
        size.as_str(),
        "--pin-path",
        pin_s.as_str(),
        "--handshake-timeout",
        "300s",
    ];
    let agent = Agent::start(&ns, &args);
    let empty = measure(&agent);
    // Fill the pinned table behind the running agent.
    {
        let maps = pin.join("maps");
        let seeds = aya::maps::Map::Array(
            aya::maps::MapData::from_pin(maps.join(map_names::FLOW_SEED))
                .expect("pinned FLOW_SEED"),
        );
        let seed = aya::maps::Array::<_, u64>::try_from(&seeds)
            .expect("FLOW_SEED")
            .get(&0, 0)
            .expect("seed");
        let mut map = aya::maps::Map::Array(
            aya::maps::MapData::from_pin(maps.join(map_names::FLOWS)).expect("pinned FLOWS"),
        );
        let mut flows = aya::maps::Array::<_, Bucket>::try_from(&mut map).expect("FLOWS");
        let now = handshake_user::run::monotonic_ns();
        let placed =
            handshake_user::probe::fill_flow_table(&mut flows, seed, half_open_flows(2, now), n)
                .expect("fill");
        assert_eq!(placed, n);
    }
    thread::sleep(Duration::from_secs(2));
    let full = measure(&agent);
    drop(agent);
    let _ = Command::new(binary())
        .args(["cleanup", "--pin-path", &pin_s])
        .output();
    let _ = Command::new("umount").arg(&bpffs).status();
    let _ = std::fs::remove_dir(&bpffs);
    rows.push(Row {
        bench: "B5",
        case: format!("agent CPU, {n} half-open entries"),
        baseline: format!("{:.1} % of a core (empty table)", empty.0 * 100.0),
        ours: format!("{:.1} % of a core", full.0 * 100.0),
        figure: format!("+{:.1} points", (full.0 - empty.0) * 100.0),
        goal: "-".to_owned(),
        verdict: "-",
    });
    rows.push(Row {
        bench: "B5",
        case: format!("agent RSS (anonymous: its own memory), {n} half-open entries"),
        baseline: format!("{} MiB (empty table)", empty.1 / 1024),
        ours: format!(
            "{} MiB (peak RSS {} MiB, the table's mapping included)",
            full.1 / 1024,
            full.2 / 1024
        ),
        figure: format!("+{} MiB", (full.1.saturating_sub(empty.1)) / 1024),
        goal: "-".to_owned(),
        verdict: "-",
    });
    rows.push(Row {
        bench: "B5",
        case: "/metrics p99 latency, full vs empty table".to_owned(),
        baseline: format!("{:.2} ms", empty.3 * 1e3),
        ours: format!("{:.2} ms", full.3 * 1e3),
        figure: format!("{:.2}x", full.3 / empty.3),
        goal: "bounded".to_owned(),
        verdict: "-",
    });
    rows.push(Row {
        bench: "B5",
        case: "/metrics series, full vs empty table".to_owned(),
        baseline: format!("{}", empty.4),
        ours: format!("{}", full.4),
        figure: if empty.4 == full.4 {
            "same".to_owned()
        } else {
            format!("{:+}", full.4 as i64 - empty.4 as i64)
        },
        goal: "independent of flows".to_owned(),
        verdict: verdict(Some(empty.4 == full.4)),
    });
}

fn b6(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!("B6 conservation: packets sent = packets counted");
    let topo = quiet_topology();
    let agent = Agent::start(&topo.server, &["--iface", SERVER_IF]);
    let per_kind = if s.quick { 20_000 } else { 100_000 };
    let mut arp = data_segment(&client());
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let syns: Vec<Vec<u8>> = distinct_clients(per_kind, false, false)
        .iter()
        .map(|c| syn(c, 1).build())
        .collect();
    let data: Vec<Vec<u8>> = (0..per_kind)
        .map(|i| data_segment(&Packet::tcp(v4(1), 1024 + (i % 50000) as u16, v4(2), 80)))
        .collect();
    let other: Vec<Vec<u8>> = (0..per_kind).map(|_| arp.clone()).collect();
    let before = agent.scrape(&topo.server);
    let mut frames = syns;
    frames.extend(data);
    frames.extend(other);
    let total = frames.len() as u64;
    topo.inject_from_client_as_is(otherhost(frames));
    let l = [("iface", SERVER_IF), ("hook", "ingress")];
    let after = agent.wait_for(
        &topo.server,
        Duration::from_secs(30),
        "every frame counted",
        |e| {
            e.sum("tcp_handshake_packets_total", &l) - before.sum("tcp_handshake_packets_total", &l)
                >= total as f64
        },
    );
    let counted = after.sum("tcp_handshake_packets_total", &l)
        - before.sum("tcp_handshake_packets_total", &l);
    let syn_counted = after.sum("tcp_handshake_syn_packets_total", &[("iface", SERVER_IF)])
        - before.sum("tcp_handshake_syn_packets_total", &[("iface", SERVER_IF)]);
    rows.push(Row {
        bench: "B6",
        case: format!("{total} frames sent (1/3 SYN, 1/3 data, 1/3 ARP)"),
        baseline: format!("{total} sent"),
        ours: format!("{counted:.0} counted, {syn_counted:.0} SYNs"),
        figure: format!("{:+.0}", counted - total as f64),
        goal: "exact".to_owned(),
        verdict: verdict(Some(
            counted == total as f64 && syn_counted == per_kind as f64,
        )),
    });
    eprintln!("  B6 sent {total}, counted {counted}, SYNs {syn_counted}");
    if counted != total as f64 {
        for l in after.text.lines().filter(|l| {
            l.starts_with("tcp_handshake_packets_total")
                || l.starts_with("tcp_handshake_parse_errors_total")
                || l.starts_with("tcp_handshake_syn_packets_total")
        }) {
            if !l.ends_with(" 0") {
                eprintln!("    {l}");
            }
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cores = thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cpu}, {cores} cores, {mem} GiB; Linux {kernel}")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--compare") {
        let bins: Vec<PathBuf> = args
            .iter()
            .skip(at + 1)
            .take(2)
            .map(PathBuf::from)
            .collect();
        let number = |flag: &str, default: f64| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        compare(
            &bins,
            number("--rounds", 7.0) as usize,
            number("--seconds", 3.0),
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<String> = args
        .iter()
        .skip(1)
        .filter(|a| a.starts_with('B'))
        .cloned()
        .collect();
    let s = if quick {
        Settings {
            quick,
            runs: 5,
            repeat: 200_000,
            seconds: 0.6,
        }
    } else {
        Settings {
            quick,
            runs: 7,
            repeat: 1_000_000,
            seconds: 3.0,
        }
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    let want = |b: &str| only.is_empty() || only.iter().any(|o| o == b);
    let benches: [(&str, Bench); 6] = [
        ("B1", b1),
        ("B2", b2),
        ("B3", b3),
        ("B4", b4),
        ("B5", b5),
        ("B6", b6),
    ];
    for (name, bench) in benches {
        if want(name) {
            let t = Instant::now();
            bench(&s, &mut rows);
            eprintln!("{name}: {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    let mut table = String::from(
        "| bench | case | baseline | ours | figure | goal | |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.bench, r.case, r.baseline, r.ours, r.figure, r.goal, r.verdict
        );
    }
    println!("{table}");
    let mode = if quick {
        "`cargo xtask bench --quick`"
    } else {
        "`cargo xtask bench`"
    };
    let report = format!(
        "# Benchmarks\n\nLast run: {mode}, {:.0} s, on {}.\n\n{table}\n{}",
        started.elapsed().as_secs_f64(),
        machine(),
        include_str!("../../../docs/benchmark-method.md")
    );
    if only.is_empty() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md");
        // The detection suite's section (`cargo xtask detect`) is its own.
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let report = handshake_tests::detect::report::keep_section(&old, &report);
        std::fs::write(path, report).expect("write BENCHMARKS.md");
        eprintln!("wrote BENCHMARKS.md");
    }
}

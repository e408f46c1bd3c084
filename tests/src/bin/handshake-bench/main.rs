//! `cargo xtask bench [--quick]`: what handshake-monitor costs, each figure
//! a ratio or a difference against a baseline measured in the same run,
//! the median of interleaved runs. Prints a table and rewrites BENCHMARKS.md.
//!
//! B1 per packet (BPF_PROG_TEST_RUN) · B2 line rate on veth · B3 what users
//! pick instead (connections/s) · B4 flood survival · B5 the agent (scan,
//! CPU, memory, scrape latency) · B6 conservation (sent = counted) · B8
//! reading captures, against pcap-parser.
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

mod b1;
mod b2;
mod b3;
mod b4;
mod b5;
mod b6;
mod b8;

use b1::*;
use b2::*;
use b3::*;
use b4::*;
use b5::*;
use b6::*;

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

/// The command line `cargo xtask bench` passes on.
#[derive(clap::Parser)]
#[command(name = "handshake-bench")]
struct Args {
    /// Fewer and shorter runs.
    #[arg(long)]
    quick: bool,
    /// The kernel programs of two agent binaries, in situ (B3's path).
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    compare: Option<Vec<PathBuf>>,
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Only these benchmarks (B1 .. B6, B8).
    only: Vec<String>,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    if let Some(bins) = &args.compare {
        compare(bins, args.rounds, args.seconds);
        return;
    }
    let (quick, only) = (args.quick, args.only);
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
    let benches: [(&str, Bench); 7] = [
        ("B1", b1),
        ("B2", b2),
        ("B3", b3),
        ("B4", b4),
        ("B5", b5),
        ("B6", b6),
        ("B8", b8::b8),
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
        include_str!("../../../../docs/benchmark-method.md")
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

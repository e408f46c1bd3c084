//! B3: connections per second and host CPU per connection, ours against
//! what users pick instead (tcpdump, nf_conntrack), paired by round; and
//! `--compare`, two builds in situ.
use super::*;

/// Connections per second from one client thread, for `seconds`.
pub(crate) fn connect_rate(topo: &Topology, seconds: f64) -> f64 {
    let (connections, elapsed) = connect_for(topo, seconds);
    connections as f64 / elapsed
}

/// [`connect_rate`], and the whole machine's busy CPU time per connection
/// over the same run, in us (see [`HostCpu`]).
pub(crate) fn connect_run(topo: &Topology, seconds: f64) -> (f64, f64) {
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
pub(crate) struct HostCpu {
    wall: Instant,
    idle_us: u64,
    steal_us: u64,
    cpus: u64,
}

impl HostCpu {
    pub(crate) fn now() -> Self {
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
    pub(crate) fn busy_us_since(&self, before: &Self) -> f64 {
        let wall_us = self.wall.duration_since(before.wall).as_secs_f64() * 1e6 * self.cpus as f64;
        let idle = self.idle_us.saturating_sub(before.idle_us) as f64;
        let steal = self.steal_us.saturating_sub(before.steal_us) as f64;
        (wall_us - idle - steal).max(0.0)
    }
}

/// Connections made from one client thread in `seconds`, and the seconds
/// they took.
pub(crate) fn connect_for(topo: &Topology, seconds: f64) -> (u64, f64) {
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
pub(crate) const SETTLE_SECONDS: f64 = 0.3;

/// What a B3 configuration is measured as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The baseline every other is a ratio to.
    NoMonitor,
    /// The agent: graded against the goal.
    Ours,
    /// What users pick instead: ours must be ahead of it.
    Peer,
    /// Shown for contrast, not graded.
    Contrast,
}

/// A monitor (or none) on the server's path, as B3 sets it up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    None,
    Agent(&'static [&'static str]),
    Tcpdump,
    Conntrack,
    EmptyHooks { xdp: bool },
    OurProgramsAlone,
}

/// B3's configurations, in their report order; the no-monitor one first.
pub(crate) const CONFIGS: [(&str, Role, Setup); 9] = [
    ("no monitor", Role::NoMonitor, Setup::None),
    ("handshake-monitor", Role::Ours, Setup::Agent(&[])),
    ("tcpdump (SYN filter)", Role::Peer, Setup::Tcpdump),
    ("nf_conntrack", Role::Peer, Setup::Conntrack),
    (
        "handshake-monitor, native XDP (--xdp-mode driver)",
        Role::Contrast,
        Setup::Agent(&["--xdp-mode", "driver"]),
    ),
    (
        "handshake-monitor, generic XDP (--ingress-hook xdp)",
        Role::Contrast,
        Setup::Agent(&["--ingress-hook", "xdp"]),
    ),
    (
        "empty programs on TC ingress and egress: the agent's hooks alone",
        Role::Contrast,
        Setup::EmptyHooks { xdp: false },
    ),
    (
        "empty programs on generic XDP and TC egress: those hooks alone",
        Role::Contrast,
        Setup::EmptyHooks { xdp: true },
    ),
    (
        "our programs alone (TC ingress and egress), no agent process",
        Role::Contrast,
        Setup::OurProgramsAlone,
    ),
];

/// Index in [`CONFIGS`] of the one with `role` (the first).
fn index_of(role: Role) -> usize {
    CONFIGS.iter().position(|c| c.1 == role).unwrap_or(0)
}

pub(crate) fn b3(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!("B3 connections/s through the normal stack: none, ours, tcpdump, nf_conntrack");
    let topo = Topology::new();
    let server = Server::start(&topo);
    let configs: Vec<&str> = CONFIGS.iter().map(|c| c.0).collect();
    let (none_i, ours_i) = (index_of(Role::NoMonitor), index_of(Role::Ours));
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
            let setup = CONFIGS[i].2;
            let mut agent: Option<Agent> = None;
            let mut child: Option<Child> = None;
            let mut attached: Option<mpsc::Sender<()>> = None;
            match setup {
                Setup::Agent(flags) => {
                    let mut args = vec!["--iface", SERVER_IF];
                    args.extend_from_slice(flags);
                    agent = Some(Agent::start(&topo.server, &args));
                }
                Setup::Tcpdump => {
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
                Setup::Conntrack => {
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
                Setup::EmptyHooks { xdp } => {
                    attached = Some(attach_empty_hooks_in(&topo.server, SERVER_IF, xdp));
                }
                Setup::OurProgramsAlone => {
                    attached = Some(attach_in(&topo.server, SERVER_IF, true, IngressPlan::Tc));
                }
                Setup::None => {}
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
            if setup == Setup::Conntrack {
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
    let none = median(&mut results[none_i].clone());
    // Each round's rate over that round's no-monitor rate: the comparisons
    // are made on these, paired by round.
    let ratios_of = |i: usize| -> Vec<f64> {
        results[i]
            .iter()
            .zip(&results[none_i])
            .map(|(x, b)| x / b)
            .collect()
    };
    // The machine's busy CPU time per connection, all CPUs: what each
    // monitor costs the host, wherever it runs (tcpdump's own process runs
    // on another CPU than the connections, and a rate may not see it).
    let cpu_none = median(&mut cpu[none_i].clone());
    let cpu_rows: Vec<Row> = (0..CONFIGS.len())
        .filter(|i| matches!(CONFIGS[*i].1, Role::Ours | Role::Peer))
        .map(|i| {
            let mut extra: Vec<f64> = cpu[i]
                .iter()
                .zip(&cpu[none_i])
                .map(|(x, b)| x - b)
                .collect();
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
    for (i, config) in configs.iter().enumerate().filter(|(i, _)| *i != none_i) {
        let mut ratios = ratios_of(i);
        let r = median(&mut ratios);
        // `median` sorted them: the spread between rounds, to read the
        // differences between configurations against.
        let (lo, hi) = (
            ratios.first().copied().unwrap_or(f64::NAN),
            ratios.last().copied().unwrap_or(f64::NAN),
        );
        let mut figure = format!("{r:.3}x (rounds {lo:.2}-{hi:.2})");
        let (goal, ok) = match CONFIGS[i].1 {
            Role::Ours => (">= 0.90x".to_owned(), Some(r >= 0.90)),
            Role::Contrast | Role::NoMonitor => ("(contrast)".to_owned(), None),
            Role::Peer => {
                // Ours against this monitor round by round: the rotation runs
                // the two one or two runs apart, where each one's ratio to the
                // no-monitor run can be most of a round away from the other's.
                let mut ahead: Vec<f64> = results[ours_i]
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
            }
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
pub(crate) struct Server {
    stop: Arc<AtomicBool>,
}

impl Server {
    pub(crate) fn start(topo: &Topology) -> Self {
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

    pub(crate) fn stop(self, topo: &Topology) {
        self.stop.store(true, Ordering::Relaxed);
        // One more connection wakes the server out of accept to see `stop`.
        topo.client
            .run(|| drop(TcpStream::connect((SERVER_V4, 7000))));
    }
}

/// The agent's programs, as the kernel names them.
pub(crate) const AGENT_PROGRAMS: &[&str] = &[
    program_names::XDP_INGRESS,
    program_names::TC_INGRESS,
    program_names::TC_EGRESS,
];

/// What the programs named `names`, attached in `topo`'s server namespace,
/// cost per run, by the kernel's own run-time statistics, over `seconds` of
/// connections (after a discarded settling run): (ns per run, runs per
/// connection). The statistics cost two clock reads per run, so they are
/// on only here.
pub(crate) fn program_time(topo: &Topology, names: &[&str], seconds: f64) -> (f64, f64) {
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
pub(crate) fn compare(bins: &[PathBuf], rounds: usize, seconds: f64) {
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
pub(crate) fn run_stats(names: &[&str]) -> std::collections::HashMap<u32, (u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| names.iter().any(|w| w.get(..15).unwrap_or(w) == n))
        })
        .map(|p| (p.id(), (p.run_count(), p.run_time().as_nanos() as u64)))
        .collect()
}

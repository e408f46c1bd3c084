//! The agent's contract, end to end in namespaces: gauges from the
//! background scan, timeouts, the detector, per-listener series, restarts
//! with pinned state, configuration precedence, interfaces that come and go,
//! and one clear line for every bad input.
use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use handshake_tests::{
    agent::{Agent, assert_one_line_error, run_to_exit},
    metrics::Exposition,
    netns::{Netns, SERVER_IF, SERVER_V4, Topology, ip},
    packet::{Packet, SYN},
};

const WAIT: Duration = Duration::from_secs(20);

/// A listener in the server namespace that accepts (and closes) whatever
/// arrives, until the test ends.
fn listen(topo: &Topology, port: u16) {
    let (tx, rx) = mpsc::channel();
    topo.server.spawn(move || {
        let listener = TcpListener::bind((SERVER_V4, port)).expect("bind");
        tx.send(()).expect("ready");
        for s in listener.incoming() {
            drop(s);
        }
    });
    rx.recv().expect("listener ready");
}

fn connect_n(topo: &Topology, port: u16, n: usize) {
    topo.client
        .connect_n(SocketAddr::new(SERVER_V4.parse().expect("ip"), port), n);
}

/// `n` SYNs to `port` from 198.18.0.99 (an address nobody has): the server
/// answers each with a SYN-ACK that no one will ever acknowledge.
fn spoofed_syns(topo: &Topology, port: u16, n: u16) {
    topo.blackhole_via_client("198.18.0.99");
    let frames = (0..n)
        .map(|i| {
            Packet::tcp(
                "198.18.0.99".parse().expect("ip"),
                20000 + i,
                SERVER_V4.parse().expect("ip"),
                port,
            )
            .flags(SYN)
            .seq(7_000_000 + u32::from(i) * 1000)
            .build()
        })
        .collect();
    topo.inject_from_client(frames);
}

fn v(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    e.sum(name, labels)
}

/// Spoofed SYNs to an open port are half-open in syn_received until the
/// timeout, then counted as timeouts{stage="syn_received"} and gone; the
/// detector fires on the buildup and resolves when it is gone.
#[test]
fn spoofed_syns_are_half_open_then_time_out_and_the_detector_follows() {
    let topo = Topology::new();
    listen(&topo, 8080);
    let agent = Agent::start(
        &topo.server,
        &[
            "--iface",
            SERVER_IF,
            "--handshake-timeout",
            "3s",
            "--scan-interval",
            "200ms",
            "--listener-ports",
            "8080",
            "--detector.half-open-threshold",
            "10",
            "--detector.for",
            "500ms",
        ],
    );
    spoofed_syns(&topo, 8080, 12);
    let s0 = [
        ("iface", SERVER_IF),
        ("direction", "inbound"),
        ("family", "ipv4"),
    ];
    let e = agent.wait_for(&topo.server, WAIT, "12 half-open in syn_received", |e| {
        v(e, "tcp_handshake_half_open", &[("stage", "syn_received")]) == 12.0
    });
    assert_eq!(v(&e, "tcp_handshake_attempts_total", &s0), 12.0);
    assert_eq!(v(&e, "tcp_handshake_synack_total", &s0), 12.0);
    assert!(
        !e.text.contains("iface=\"other\""),
        "one interface, one slot: no iface=\"other\" series that would only read 0"
    );
    assert_eq!(
        v(&e, "tcp_handshake_half_open", &[("stage", "syn_sent")]),
        0.0
    );
    assert_eq!(
        v(&e, "tcp_handshake_flow_table_entries", &[("state", "live")]),
        12.0
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_flow_table_entries",
            &[("state", "tombstone")]
        ),
        0.0
    );
    assert_eq!(
        v(&e, "tcp_handshake_listener_half_open", &[("port", "8080")]),
        12.0
    );
    assert!(
        v(
            &e,
            "tcp_handshake_half_open_oldest_seconds",
            &[("stage", "syn_received")]
        ) > 0.0
    );
    agent.wait_for(&topo.server, WAIT, "the detector to fire", |e| {
        v(
            e,
            "tcp_handshake_detector_firing",
            &[("condition", "half_open_buildup")],
        ) == 1.0
    });
    let e = agent.wait_for(&topo.server, WAIT, "12 timeouts", |e| {
        v(
            e,
            "tcp_handshake_timeouts_total",
            &[("stage", "syn_received")],
        ) == 12.0
    });
    assert_eq!(
        v(&e, "tcp_handshake_timeouts_total", &[("stage", "syn_sent")]),
        0.0
    );
    assert_eq!(v(&e, "tcp_handshake_half_open", &[]), 0.0);
    assert_eq!(
        v(
            &e,
            "tcp_handshake_flow_table_entries",
            &[("state", "tombstone")]
        ),
        12.0,
        "tombstones, for late retransmissions"
    );
    assert_eq!(
        v(&e, "tcp_handshake_flow_table_entries", &[("state", "live")]),
        0.0
    );
    assert_eq!(v(&e, "tcp_handshake_completed_total", &[]), 0.0);
    assert_eq!(
        v(&e, "tcp_handshake_invalid_total", &[]),
        0.0,
        "the server's SYN-ACK retries after the timeout are late, not unsolicited"
    );
    agent.wait_for(&topo.server, WAIT, "the detector to resolve", |e| {
        v(
            e,
            "tcp_handshake_detector_firing",
            &[("condition", "half_open_buildup")],
        ) == 0.0
    });
    let log = agent.log();
    let fired: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("condition=half_open_buildup state=firing"))
        .collect();
    assert_eq!(fired.len(), 1, "one warning: {log}");
    for part in [
        "top_ports_by=half_open top_ports=8080:12",
        "source_prefixes=1 top_sources_share=1.000 top_sources=198.18.0.0/24:12",
        "inbound_half_open=12 half_open_threshold=10",
    ] {
        assert!(fired[0].contains(part), "{part}: {}", fired[0]);
    }
    assert_eq!(
        log.matches("condition=half_open_buildup state=resolved")
            .count(),
        1,
        "{log}"
    );
}

/// `--log.format json`: every line the agent writes is one JSON object, and
/// the detector's keep their fields (condition, state, ports, sources).
#[test]
fn json_logs_are_one_object_per_line_with_the_detector_fields() {
    let topo = Topology::new();
    listen(&topo, 8080);
    let agent = Agent::start(
        &topo.server,
        &[
            "--iface",
            SERVER_IF,
            "--listener-ports",
            "8080",
            "--detector.half-open-threshold",
            "10",
            "--detector.for",
            "500ms",
            "--log.format",
            "json",
            "--log.level",
            "debug",
        ],
    );
    spoofed_syns(&topo, 8080, 12);
    agent.wait_for(&topo.server, WAIT, "the detector to fire", |e| {
        v(
            e,
            "tcp_handshake_detector_firing",
            &[("condition", "half_open_buildup")],
        ) == 1.0
    });
    let log = agent.log();
    let objects: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(objects.iter().any(|o| o["level"] == "debug"), "{log}");
    let fired = objects
        .iter()
        .find(|o| o["condition"] == "half_open_buildup" && o["state"] == "firing")
        .unwrap_or_else(|| panic!("no detector object: {log}"));
    assert_eq!(fired["level"], "warn");
    assert_eq!(fired["source"], "detector");
    assert_eq!(fired["inbound_half_open"], 12.0);
    assert_eq!(fired["top_ports"], "8080:12");
    assert_eq!(fired["top_sources"], "198.18.0.0/24:12");
}

/// In a time namespace the agent's CLOCK_MONOTONIC is offset from the
/// kernel's, which the flow table's ages are on: ahead, 3-second-old
/// handshakes once read as 100000 s old and timed out at once; behind, they
/// never expired. Both ways, 12 spoofed SYNs are half-open (their age under
/// the timeout), then time out after it.
#[test]
fn ages_are_right_in_a_time_namespace() {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .expect("/proc/uptime");
    for offset in [100_000, -((uptime / 2.0) as i64)] {
        let topo = Topology::new();
        listen(&topo, 8080);
        let agent = Agent::start_in_time_namespace(
            &topo.server,
            offset,
            &[
                "--iface",
                SERVER_IF,
                "--handshake-timeout",
                "3s",
                "--scan-interval",
                "200ms",
                "--listener-ports",
                "8080",
            ],
        );
        spoofed_syns(&topo, 8080, 12);
        let e = agent.wait_for(&topo.server, WAIT, "12 half-open", |e| {
            v(e, "tcp_handshake_half_open", &[("stage", "syn_received")]) == 12.0
        });
        let age = v(
            &e,
            "tcp_handshake_half_open_oldest_seconds",
            &[("stage", "syn_received")],
        );
        assert!(age < 3.0, "offset {offset}: oldest {age} s");
        assert_eq!(
            v(&e, "tcp_handshake_timeouts_total", &[]),
            0.0,
            "offset {offset}"
        );
        agent.wait_for(&topo.server, WAIT, "12 timeouts", |e| {
            v(
                e,
                "tcp_handshake_timeouts_total",
                &[("stage", "syn_received")],
            ) == 12.0
                && v(e, "tcp_handshake_half_open", &[]) == 0.0
        });
    }
}

/// Per-listener funnels: a tracked port gets its own series, the rest go to
/// port="other"; and the completion ratio follows the traffic.
/// `--syn-insert-budget N` reaches the kernel: of 10 new SYNs in a burst
/// (one CPU, one 100 ms window), N are tracked and the rest counted as
/// untracked; all 10 are attempts. With the default (no budget), all 10 are
/// tracked: the first test above.
#[test]
fn syn_insert_budget_flag_limits_new_entries() {
    let topo = Topology::new();
    listen(&topo, 8081);
    let agent = Agent::start(
        &topo.server,
        &[
            "--iface",
            SERVER_IF,
            "--listener-ports",
            "8081",
            "--syn-insert-budget",
            "4",
        ],
    );
    spoofed_syns(&topo, 8081, 10);
    // The table gauge comes from the scan: wait for the scan after the SYNs.
    let e = agent.wait_for(
        &topo.server,
        WAIT,
        "10 attempts, 4 of them in the table",
        |e| {
            v(e, "tcp_handshake_attempts_total", &[]) == 10.0
                && v(e, "tcp_handshake_flow_table_entries", &[]) == 4.0
        },
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_syn_untracked_total",
            &[("reason", "insert_budget")]
        ),
        6.0
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_syn_untracked_total",
            &[("reason", "insert_failed")]
        ),
        0.0
    );
}

#[test]
fn listener_funnels_and_ratios() {
    let topo = Topology::new();
    listen(&topo, 8080);
    listen(&topo, 8081);
    let agent = Agent::start(
        &topo.server,
        &[
            "--iface",
            SERVER_IF,
            "--listener-ports",
            "8080",
            "--scan-interval",
            "200ms",
        ],
    );
    connect_n(&topo, 8080, 6);
    connect_n(&topo, 8081, 2);
    topo.client.run(|| {
        assert!(
            TcpStream::connect((SERVER_V4, 9999)).is_err(),
            "closed port refuses"
        )
    });
    let e = agent.wait_for(&topo.server, WAIT, "8 completed", |e| {
        v(e, "tcp_handshake_listener_completed_total", &[]) == 8.0
    });
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_attempts_total",
            &[("port", "8080")]
        ),
        6.0
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_completed_total",
            &[("port", "8080")]
        ),
        6.0
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_attempts_total",
            &[("port", "other")]
        ),
        3.0
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_completed_total",
            &[("port", "other")]
        ),
        2.0
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_rejected_total",
            &[("port", "other")]
        ),
        1.0
    );
    assert_eq!(
        v(&e, "tcp_handshake_rejected_total", &[("iface", SERVER_IF)]),
        1.0
    );
    assert!(
        !e.text.contains("port=\"8081\""),
        "untracked ports get no series of their own"
    );
    // 9 attempts, 8 completed, 8 SYN-ACKs within the window.
    let s0 = [
        ("iface", SERVER_IF),
        ("direction", "inbound"),
        ("family", "ipv4"),
    ];
    // Ratios come from the last scan, which may predate the last
    // connections: wait for one that saw all nine attempts.
    let e = agent.wait_for(&topo.server, WAIT, "ratios over all nine attempts", |e| {
        (v(e, "tcp_handshake_completion_ratio", &s0) - 8.0 / 9.0).abs() < 1e-9
    });
    assert!((v(&e, "tcp_handshake_synack_ratio", &s0) - 8.0 / 9.0).abs() < 1e-9);
    assert_eq!(v(&e, "tcp_handshake_flow_table_capacity", &[]), 65536.0);
    assert_eq!(v(&e, "tcp_handshake_detector_firing", &[]), 0.0);
}

/// A bpffs mounted for one test, unmounted after.
struct BpfFs(std::path::PathBuf);

impl BpfFs {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hm-bpffs-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(ok.success(), "mount bpffs at {}", dir.display());
        Self(dir)
    }

    fn pin_path(&self) -> String {
        self.0.join("hm").to_string_lossy().into_owned()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn xdp_attached(ns: &Netns, dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-d", "link", "show", dev])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn tcx_programs(ns: &Netns, dev: &'static str, at: aya::programs::TcAttachType) -> usize {
    ns.run(move || aya::programs::SchedClassifier::query_tcx(dev, at).map_or(0, |(_, p)| p.len()))
}

/// (XDP attached, TCX ingress programs, TCX egress programs) on `dev`.
fn hooks(ns: &Netns, dev: &'static str) -> (bool, usize, usize) {
    use aya::programs::TcAttachType::{Egress, Ingress};
    (
        xdp_attached(ns, dev),
        tcx_programs(ns, dev, Ingress),
        tcx_programs(ns, dev, Egress),
    )
}

/// With --pin-path, a stopped agent leaves the programs attached and its
/// maps pinned: connections made while it is down are counted, and the
/// restarted agent's counters continue. `cleanup` then removes everything.
/// The restarted agent runs with the default hooks: it adopts the pinned
/// ingress link, on XDP or TC, rather than attach a second one.
#[test]
fn restarts_with_pin_path_lose_nothing() {
    for (first_hook, attached) in [("tc", (false, 1, 1)), ("xdp", (true, 0, 1))] {
        let topo = Topology::new();
        let bpffs = BpfFs::new("restart");
        let pin = bpffs.pin_path();
        listen(&topo, 8080);
        let args = ["--iface", SERVER_IF, "--pin-path", pin.as_str()];
        let first = Agent::start(
            &topo.server,
            &[&args[..], &["--ingress-hook", first_hook]].concat(),
        );
        assert_eq!(hooks(&topo.server, SERVER_IF), attached, "{first_hook}");
        assert_eq!(
            v(
                &first.scrape(&topo.server),
                "tcp_handshake_completed_total",
                &[]
            ),
            0.0
        );
        connect_n(&topo, 8080, 10);
        assert_eq!(
            v(
                &first.scrape(&topo.server),
                "tcp_handshake_completed_total",
                &[("iface", SERVER_IF)]
            ),
            10.0
        );
        assert!(first.stop(), "clean exit on SIGTERM");
        assert_eq!(
            hooks(&topo.server, SERVER_IF),
            attached,
            "{first_hook}: pinned, both programs stay attached"
        );
        connect_n(&topo, 8080, 7); // nobody running
        let second = Agent::start(&topo.server, &args);
        assert_eq!(
            hooks(&topo.server, SERVER_IF),
            attached,
            "{first_hook}: adopted, not attached twice"
        );
        let e = second.scrape(&topo.server);
        assert_eq!(
            v(&e, "tcp_handshake_completed_total", &[("iface", SERVER_IF)]),
            17.0,
            "{first_hook}: counted while down, not reset"
        );
        connect_n(&topo, 8080, 5);
        let e = second.scrape(&topo.server);
        assert_eq!(
            v(&e, "tcp_handshake_completed_total", &[("iface", SERVER_IF)]),
            22.0,
            "{first_hook}"
        );
        assert_eq!(
            v(&e, "tcp_handshake_attempts_total", &[("iface", SERVER_IF)]),
            22.0,
            "{first_hook}"
        );
        assert!(second.stop());
        let out = run_to_exit(&[], &["cleanup", "--pin-path", &pin], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            hooks(&topo.server, SERVER_IF),
            (false, 0, 0),
            "{first_hook}: cleanup detaches everything"
        );
    }
}

/// `cleanup` removes only its own pins: a directory that is not on a BPF
/// filesystem is refused, and what is in it stays (it once removed every
/// file under DIR/maps and DIR/links, wherever DIR was).
#[test]
fn cleanup_refuses_what_is_not_its_pins() {
    let dir = std::env::temp_dir().join(format!("hm-cleanup-{}", std::process::id()));
    let files = [dir.join("maps/COUNTERS"), dir.join("links/2-eth0-tc")];
    for f in &files {
        std::fs::create_dir_all(f.parent().expect("parent")).expect("dir");
        std::fs::write(f, "not a pin").expect("file");
    }
    let out = run_to_exit(&[], &["cleanup", "--pin-path", &dir.to_string_lossy()], &[]);
    assert_one_line_error(&out, "is not on a BPF filesystem: not a --pin-path");
    for f in &files {
        assert!(f.exists(), "{} left alone", f.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pin directory is one agent's: a second agent on it is refused with one
/// line; a map there that is not this agent's (another program's, another
/// version's) is named, before the verifier is reached (it once answered
/// with a 355-line log and a misleading \"Permission denied\").
#[test]
fn a_pin_directory_is_one_agents_and_holds_only_its_maps() {
    let topo = Topology::new();
    let bpffs = BpfFs::new("owner");
    let pin = bpffs.pin_path();
    let args = ["run", "--iface", SERVER_IF, "--pin-path", pin.as_str()];
    let first = Agent::start(&topo.server, &args[1..]);
    let out = run_to_exit(&["ip", "netns", "exec", &topo.server.name], &args, &[]);
    assert_one_line_error(&out, "is in use by another handshake-monitor");
    assert!(first.stop());
    let cleanup = run_to_exit(&[], &["cleanup", "--pin-path", &pin], &[]);
    assert!(cleanup.status.success());

    // Another map pinned under the name of ours.
    let probe = handshake_user::probe::Probe::load(&handshake_user::probe::LoadOptions::default())
        .expect("load");
    let maps = std::path::Path::new(&pin).join("maps");
    std::fs::create_dir_all(&maps).expect("maps dir");
    probe
        .ebpf()
        .map(handshake_common::map_names::LATENCY)
        .expect("LATENCY")
        .pin(maps.join(handshake_common::map_names::COUNTERS))
        .expect("pin");
    drop(probe);
    let out = run_to_exit(&["ip", "netns", "exec", &topo.server.name], &args, &[]);
    assert_one_line_error(&out, "maps/COUNTERS is not this agent's");
}

/// Without --pin-path nothing is left behind, on SIGTERM or SIGINT, with
/// ingress on TC (the default on veth) or on XDP.
#[test]
fn without_pin_path_exit_detaches_everything() {
    let topo = Topology::new();
    for (hook, attached) in [
        ("auto", (false, 1, 1)),
        ("xdp", (true, 0, 1)),
        ("tc", (false, 1, 1)),
    ] {
        for sigint in [false, true] {
            let agent = Agent::start(
                &topo.server,
                &["--iface", SERVER_IF, "--ingress-hook", hook],
            );
            assert_eq!(hooks(&topo.server, SERVER_IF), attached, "{hook}");
            let log_before = agent.log();
            assert!(
                if sigint {
                    agent.interrupt()
                } else {
                    agent.stop()
                },
                "clean exit ({hook}, sigint: {sigint}): {log_before}"
            );
            assert_eq!(
                hooks(&topo.server, SERVER_IF),
                (false, 0, 0),
                "{hook}: detached"
            );
        }
    }
}

/// Flag beats environment beats config file beats default.
#[test]
fn config_file_environment_and_flags_in_that_order() {
    let ns = Netns::new("config");
    let path = std::env::temp_dir().join(format!("{}.toml", ns.name));
    std::fs::write(
        &path,
        "\"web.listen-address\" = \"127.0.0.1:9500\"\nlistener-ports = [8080]\nhandshake-timeout = \"45s\"\niface = [\"lo\"]\n",
    )
    .expect("write config");
    let config = path.to_string_lossy().into_owned();
    // Config alone: address and ports from the file.
    let agent = Agent::start_full(&ns, &["--config", &config], &[], Some("127.0.0.1:9500"));
    assert!(
        agent
            .scrape(&ns)
            .text
            .contains("tcp_handshake_listener_attempts_total{port=\"8080\"}")
    );
    drop(agent);
    // The environment beats the file; a flag beats the environment.
    let agent = Agent::start_full(
        &ns,
        &[
            "--config",
            &config,
            "--web.listen-address",
            "127.0.0.1:9600",
        ],
        &[
            ("HANDSHAKE_MONITOR_LISTENER_PORTS", "9090"),
            ("HANDSHAKE_MONITOR_LISTEN_ADDRESS", "127.0.0.1:9700"),
        ],
        None,
    );
    assert_eq!(agent.addr.port(), 9600);
    let text = agent.scrape(&ns).text;
    assert!(
        text.contains("port=\"9090\"") && !text.contains("port=\"8080\""),
        "{text}"
    );
    let _ = std::fs::remove_file(path);
}

/// In the default mode (every interface that is up), an interface created
/// while the agent runs is attached and counted under its own name, and one
/// that is deleted is let go without stopping anything.
#[test]
fn interfaces_that_come_and_go_do_not_stop_the_agent() {
    let topo = Topology::new();
    let agent = Agent::start(&topo.server, &["--scan-interval", "200ms"]);
    ip(&[
        "link",
        "add",
        "c1",
        "netns",
        &topo.client.name,
        "type",
        "veth",
        "peer",
        "name",
        "s1",
        "netns",
        &topo.server.name,
    ])
    .expect("second veth");
    topo.client
        .ip(&["addr", "add", "198.18.1.1/24", "dev", "c1"])
        .expect("addr");
    topo.server
        .ip(&["addr", "add", "198.18.1.2/24", "dev", "s1"])
        .expect("addr");
    topo.client.ip(&["link", "set", "c1", "up"]).expect("up");
    topo.server.ip(&["link", "set", "s1", "up"]).expect("up");
    agent.wait_for(&topo.server, WAIT, "s1 to be attached", |e| {
        e.text.contains("iface=\"s1\"")
    });
    let target: SocketAddr = "198.18.1.2:7000".parse().expect("addr");
    let server = topo.server.accept_n(target, 4);
    topo.client.connect_n(target, 4);
    assert_eq!(server.join().expect("server"), 4);
    agent.wait_for(&topo.server, WAIT, "4 completed on s1", |e| {
        v(
            e,
            "tcp_handshake_completed_total",
            &[("iface", "s1"), ("direction", "inbound")],
        ) == 4.0
    });
    topo.server.ip(&["link", "del", "s1"]).expect("delete s1");
    agent.wait_for(&topo.server, WAIT, "s1 to be let go", |e| {
        !e.text.contains("iface=\"s1\"")
    });
    assert!(agent.log().contains("s1 went away"));
    assert!(agent.stop(), "still running, exits cleanly");
}

/// `n` veth pairs inside `ns` (`{prefix}a{i}` and `{prefix}b{i}`), up.
fn veth_pairs(ns: &Netns, prefix: &str, n: usize) {
    for i in 0..n {
        let (a, b) = (format!("{prefix}a{i}"), format!("{prefix}b{i}"));
        ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])
            .expect("veth pair");
        ns.ip(&["link", "set", &a, "up"]).expect("up");
        ns.ip(&["link", "set", &b, "up"]).expect("up");
    }
}

/// The `iface` labels of an exposition that start with `prefix`.
fn iface_labels(e: &Exposition, prefix: &str) -> std::collections::BTreeSet<String> {
    e.text
        .split("iface=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Interfaces that vanish while a pinned agent is down give their counter
/// slots back at its restart: after 30 went away, 40 new ones all get their
/// own label (the slots once stayed taken, and 9 of the 40 were counted as
/// iface="other" for good).
#[test]
fn a_pinned_restart_reclaims_the_slots_of_vanished_interfaces() {
    let topo = Topology::new();
    let bpffs = BpfFs::new("slots");
    let pin = bpffs.pin_path();
    let args = ["--pin-path", pin.as_str(), "--scan-interval", "200ms"];
    let first = Agent::start(&topo.server, &args);
    veth_pairs(&topo.server, "x", 15);
    first.wait_for(&topo.server, WAIT, "30 interfaces attached", |e| {
        iface_labels(e, "x").len() == 30
    });
    assert!(first.stop(), "clean exit");
    for i in 0..15 {
        // Deleting one end deletes its peer.
        topo.server
            .ip(&["link", "del", &format!("xa{i}")])
            .expect("delete");
    }
    let second = Agent::start(&topo.server, &args);
    veth_pairs(&topo.server, "y", 20);
    let e = second.wait_for(&topo.server, WAIT, "40 new interfaces", |e| {
        iface_labels(e, "y").len() == 40
    });
    assert!(iface_labels(&e, "x").is_empty(), "the vanished are gone");
    assert!(second.stop());
    let out = run_to_exit(&[], &["cleanup", "--pin-path", &pin], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Attaching to new interfaces takes the agent a while (some 25 ms each);
/// scrapes do not wait for it: with 100 interfaces appearing at once, no
/// scrape takes a second (they once waited 2.5 s).
#[test]
fn scrapes_do_not_wait_while_interfaces_attach() {
    let topo = Topology::new();
    let agent = Agent::start(&topo.server, &["--scan-interval", "200ms"]);
    let addr = agent.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = std::sync::Arc::clone(&stop);
    let scraper = topo.server.spawn(move || {
        let mut slowest = Duration::ZERO;
        let mut scrapes = 0;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let t = std::time::Instant::now();
            handshake_tests::metrics::scrape(addr, "/metrics").expect("scrape");
            slowest = slowest.max(t.elapsed());
            scrapes += 1;
        }
        (slowest, scrapes)
    });
    // 50 veth pairs in one batch: 100 interfaces at once.
    let batch: String = (0..50)
        .map(|i| format!("link add za{i} up type veth peer name zb{i}\nlink set zb{i} up\n"))
        .collect();
    let mut child = Command::new("ip")
        .args(["-n", &topo.server.name, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip -batch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(batch.as_bytes())
        .expect("write batch");
    assert!(child.wait().expect("ip").success(), "ip -batch");
    let deadline = std::time::Instant::now() + WAIT;
    while agent.log().matches("appeared: attached").count() < 100 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (slowest, scrapes) = scraper.join().expect("scraper");
    assert!(scrapes > 10, "{scrapes} scrapes");
    assert!(
        slowest < Duration::from_secs(1),
        "a scrape took {slowest:?} while interfaces attached"
    );
}

/// The `port` labels of the listener series.
fn port_labels(e: &Exposition) -> std::collections::BTreeSet<String> {
    e.text
        .lines()
        .filter(|l| l.starts_with("tcp_handshake_listener_attempts_total{"))
        .filter_map(|l| {
            l.split("port=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// Listeners that churn (any local user can open them) never push the
/// per-port series past the documented 256, and a real service started
/// afterwards gets its own (ports were once added and never let go: 1022
/// labels in 50 s, and a real service then counted only as "other").
#[test]
fn churning_listeners_stay_under_the_cap_and_a_real_service_gets_a_series() {
    let topo = Topology::new();
    let agent = Agent::start(&topo.server, &[]);
    // Rounds of 300 listeners held across a discovery (every 10 s), then closed.
    let churn = topo.server.spawn(|| {
        for round in 0..3u16 {
            let held: Vec<TcpListener> = (0..300)
                .map(|i| TcpListener::bind(("127.0.0.1", 20_000 + round * 300 + i)).expect("bind"))
                .collect();
            std::thread::sleep(Duration::from_secs(11));
            drop(held);
        }
    });
    let mut most = 0;
    while !churn.is_finished() {
        let n = port_labels(&agent.scrape(&topo.server)).len();
        most = most.max(n);
        std::thread::sleep(Duration::from_millis(500));
    }
    churn.join().expect("churn");
    listen(&topo, 8090);
    let e = agent.wait_for(
        &topo.server,
        Duration::from_secs(30),
        "8090 gets a series",
        |e| port_labels(e).contains("8090"),
    );
    most = most.max(port_labels(&e).len());
    // 256 ports and "other".
    assert!(most <= 257, "{most} port labels");
    assert!(most > 200, "the churn did reach the cap: {most}");
    connect_n(&topo, 8090, 3);
    agent.wait_for(&topo.server, WAIT, "3 completed on 8090", |e| {
        v(
            e,
            "tcp_handshake_listener_completed_total",
            &[("port", "8090")],
        ) == 3.0
    });
}

#[test]
fn bad_input_is_one_clear_line_and_a_non_zero_exit() {
    let tmp = std::env::temp_dir().join(format!("hm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let file = |name: &str, text: &str| {
        let p = tmp.join(name);
        std::fs::write(&p, text).expect("write");
        p.to_string_lossy().into_owned()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), "--handshake-timeout".into(), "5x".into()],
            "invalid value '5x' for '--handshake-timeout",
        ),
        (
            vec!["run".into(), "--ratio-window".into(), "0s".into()],
            "must be at least 1ms",
        ),
        (
            vec![
                "run".into(),
                "--web.telemetry-path".into(),
                "metrics".into(),
            ],
            "must start with '/'",
        ),
        (
            vec![
                "run".into(),
                "--web.listen-address".into(),
                "nowhere".into(),
            ],
            "invalid value 'nowhere'",
        ),
        (
            vec!["run".into(), "--xdp-mode".into(), "fast".into()],
            "invalid value 'fast' for '--xdp-mode",
        ),
        (
            vec!["run".into(), "--ingress-hook".into(), "bpf".into()],
            "invalid value 'bpf' for '--ingress-hook",
        ),
        (
            vec![
                "run".into(),
                "--ingress-hook".into(),
                "tc".into(),
                "--xdp-mode".into(),
                "driver".into(),
            ],
            "cannot go with --ingress-hook tc",
        ),
        (
            vec!["run".into(), "--flow-table-size".into(), "10".into()],
            "invalid value '10' for '--flow-table-size",
        ),
        (
            vec!["run".into(), "--iface".into(), "nope0".into()],
            "unknown interface \"nope0\"",
        ),
        (
            vec!["run".into(), "--config".into(), "/nonexistent.toml".into()],
            "cannot read config file /nonexistent.toml",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file("syntax.toml", "iface = [\n"),
            ],
            "malformed config file",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file("key.toml", "colour = \"blue\"\n"),
            ],
            "unknown key \"colour\"",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file("value.toml", "handshake-timeout = \"soon\"\n"),
            ],
            "invalid value 'soon'",
        ),
        (
            vec![
                "run".into(),
                "--pin-path".into(),
                tmp.to_string_lossy().into_owned(),
            ],
            "is not on a BPF filesystem",
        ),
        (
            vec!["frobnicate".into()],
            "unrecognized subcommand 'frobnicate'",
        ),
        (
            vec!["run".into(), "--config".into(), "/dev/zero".into()],
            "not a regular file of at most 1 MiB",
        ),
        (
            vec!["run".into(), "--scan-interval".into(), "1ms".into()],
            "must be at least 100ms",
        ),
        (
            vec![
                "run".into(),
                "--handshake-timeout".into(),
                "500000years".into(),
            ],
            "must be at most 24h",
        ),
        (
            // A value the flag overrides is still checked.
            vec![
                "run".into(),
                "--config".into(),
                file("overridden.toml", "handshake-timeout = \"soon\"\n"),
                "--handshake-timeout".into(),
                "5s".into(),
            ],
            "invalid value 'soon'",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file(
                    "overridden-ratio.toml",
                    "\"detector.completion-ratio\" = 5.0\n",
                ),
                "--detector.completion-ratio".into(),
                "0.5".into(),
            ],
            "--detector.completion-ratio must be in (0, 1], got 5",
        ),
        (
            vec![
                "run".into(),
                "--web.config.file".into(),
                file(
                    "web.yml",
                    "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  cipher_suites: [x]\n",
                ),
            ],
            "unknown field `cipher_suites`",
        ),
        (
            vec![
                "run".into(),
                "--detector.completion-ratio".into(),
                "5".into(),
            ],
            "--detector.completion-ratio must be in (0, 1], got 5",
        ),
        (
            vec![
                "run".into(),
                "--detector.completion-ratio".into(),
                "NaN".into(),
            ],
            "--detector.completion-ratio must be in (0, 1], got NaN",
        ),
        (
            vec!["run".into(), "--detector.min-syn-rate=-1".into()],
            "--detector.min-syn-rate must be a positive number",
        ),
        (
            vec!["run".into(), "--detector.window".into(), "100ms".into()],
            "--detector.window must be between 1s and 1h",
        ),
        (
            vec![
                "run".into(),
                "--listener-ports".into(),
                (1..=2000)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            "--listener-ports: at most 1023 ports, got 2000",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file("ratio.toml", "\"detector.completion-ratio\" = 1.5\n"),
            ],
            "--detector.completion-ratio must be in (0, 1], got 1.5",
        ),
    ];
    for (args, needle) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_one_line_error(&run_to_exit(&[], &args, &[]), needle);
    }
    // No privilege: the same binary as an unprivileged user.
    let out = run_to_exit(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ],
        &["run", "--iface", "lo"],
        &[],
    );
    assert_one_line_error(
        &out,
        "missing privilege: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN",
    );
    let _ = std::fs::remove_dir_all(tmp);
}

#[test]
fn version_and_check() {
    let out = run_to_exit(&[], &["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("handshake-monitor {}", env!("CARGO_PKG_VERSION"))
    );
    let ns = Netns::new("check");
    let name = ns.name.clone();
    let out = run_to_exit(&["ip", "netns", "exec", &name], &["check"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[ ok ] programs: the verifier accepts them"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[ ok ] interface lo (index 1): loopback"),
        "{stdout}"
    );
}

/// The live exposition passes `promtool check metrics`.
#[test]
fn exposition_passes_promtool() {
    let topo = Topology::new();
    listen(&topo, 8080);
    let agent = Agent::start(
        &topo.server,
        &["--iface", SERVER_IF, "--listener-ports", "8080"],
    );
    connect_n(&topo, 8080, 3);
    let text = agent.scrape(&topo.server).text;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (installed by cargo xtask setup)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Scrapes are bounded: the series count does not depend on traffic.
    let before = text.lines().filter(|l| !l.starts_with('#')).count();
    spoofed_syns(&topo, 8080, 200);
    let after = agent
        .scrape(&topo.server)
        .text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert_eq!(before, after, "200 new sources, no new series");
}

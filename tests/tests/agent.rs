//! The agent's contract, end to end in namespaces: gauges from the
//! background scan, timeouts, the detector and its logs, the clock in a
//! time namespace, per-listener series, the exposition itself.
use std::{
    io::Write as _,
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::mpsc,
};

use handshake_tests::{
    agent::{Agent, run_to_exit},
    fixtures::*,
    netns::{Netns, SERVER_IF, SERVER_V4, Topology},
};

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

/// A listener whose application does not accept: its accept queue shows
/// how many connections wait (as ss's Recv-Q) and its backlog, and the
/// detector names the port before the kernel drops a single SYN.
#[test]
fn an_application_that_does_not_accept_shows_in_its_accept_queue() {
    let topo = Topology::new();
    let (tx, rx) = mpsc::channel();
    topo.server.spawn(move || {
        let l = TcpListener::bind((SERVER_V4, 8085)).expect("bind");
        // SAFETY: listen(2) again on our own socket, to set the backlog.
        let rc = unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 64) };
        assert_eq!(rc, 0);
        tx.send(()).expect("ready");
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("listening");
    let agent = Agent::start(
        &topo.server,
        &[
            "--iface",
            SERVER_IF,
            "--listener-ports",
            "8085",
            "--detector.for",
            "500ms",
        ],
    );
    connect_n(&topo, 8085, 20);
    let e = agent.wait_for(&topo.server, WAIT, "20 waiting for accept()", |e| {
        v(
            e,
            "tcp_handshake_listener_accept_queue",
            &[("port", "8085")],
        ) == 20.0
    });
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_accept_queue_limit",
            &[("port", "8085")]
        ),
        64.0
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_completed_total",
            &[("port", "8085")]
        ),
        20.0
    );
    agent.wait_for(&topo.server, WAIT, "the detector", |e| {
        v(
            e,
            "tcp_handshake_detector_firing",
            &[("condition", "listener_not_accepting")],
        ) == 1.0
    });
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("condition=listener_not_accepting state=firing"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("top_ports_by=accept_queue top_ports=8085:20"),
        "{line}"
    );
}

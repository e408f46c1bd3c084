//! The programs' diagnostic events, live: at `--log.level debug` a segment
//! counted invalid or unsolicited gets one log line naming the flow, the
//! check, what it wanted and what came, at most 20 per CPU per second; at
//! the default level, none.
use std::{
    net::{IpAddr, TcpListener},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use handshake_tests::{
    agent::Agent,
    netns::{CLIENT_V4, SERVER_IF, SERVER_V4, Topology},
    packet::{ACK, Packet, SYN},
};

const WAIT: Duration = Duration::from_secs(20);
const SPOOFED: &str = "198.18.0.99";
/// Records per CPU per second (handshake-ebpf/src/diag.rs).
const PER_CPU_PER_SECOND: usize = 20;

fn listen(topo: &Topology, addr: IpAddr, port: u16) {
    let (tx, rx) = mpsc::channel();
    topo.server.spawn(move || {
        let _listener = TcpListener::bind((addr, port)).expect("bind");
        tx.send(()).expect("ready");
        loop {
            thread::park();
        }
    });
    rx.recv().expect("listener ready");
}

/// The agent's log lines that are diagnostic events.
fn events(agent: &Agent) -> Vec<String> {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("source=handshake::diag"))
        .map(str::to_owned)
        .collect()
}

fn wait_for_events(agent: &Agent, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = events(agent);
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a segment series that leaves one invalid final ACK and one
/// unsolicited SYN-ACK; the counters say so whatever the log level.
fn bad_segments(topo: &Topology, agent: &Agent) {
    let server: IpAddr = SERVER_V4.parse().expect("ip");
    let client: IpAddr = CLIENT_V4.parse().expect("ip");
    let spoofed: IpAddr = SPOOFED.parse().expect("ip");
    listen(topo, server, 8080);
    topo.blackhole_via_client(SPOOFED);
    // A SYN the server answers, then a final ACK acknowledging nothing it sent.
    topo.inject_from_client(vec![
        Packet::tcp(spoofed, 40000, server, 8080)
            .flags(SYN)
            .seq(1000)
            .build(),
    ]);
    agent.wait_for(&topo.server, WAIT, "the SYN-ACK", |e| {
        e.sum("tcp_handshake_synack_total", &[]) == 1.0
    });
    topo.inject_from_client(vec![
        Packet::tcp(spoofed, 40000, server, 8080)
            .flags(ACK)
            .seq(1001)
            .ack(7)
            .build(),
        // A SYN-ACK for a SYN nobody sent.
        Packet::tcp(client, 5555, server, 9999)
            .flags(SYN | ACK)
            .seq(1)
            .ack(2)
            .build(),
    ]);
    // The server answers the bad ACK with a RST at its ack (RFC 9293), which
    // leaves the handshake be: an invalid RST, not an abort.
    agent.wait_for(&topo.server, WAIT, "two invalid, one unsolicited", |e| {
        let invalid = |reason| e.sum("tcp_handshake_invalid_total", &[("reason", reason)]);
        invalid("ack_bad_ack") == 1.0
            && invalid("rst_out_of_window") == 1.0
            && invalid("unsolicited_synack") == 1.0
            && e.sum("tcp_handshake_aborted_total", &[]) == 0.0
    });
}

#[test]
fn at_debug_level_each_bad_segment_says_why_and_a_flood_is_capped() {
    let topo = Topology::ipv4_only();
    let agent = Agent::start(
        &topo.server,
        &["--iface", SERVER_IF, "--log.level", "debug"],
    );
    bad_segments(&topo, &agent);
    let lines = wait_for_events(&agent, 3);
    let line = |what: &str| {
        lines
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what} line in {lines:#?}\n{}", agent.log()))
            .clone()
    };
    let invalid = line("invalid final ACK");
    assert!(
        invalid.contains(&format!(
            "{SPOOFED}:40000 > {SERVER_V4}:8080 seq 1001 ack 7"
        )),
        "{invalid}"
    );
    assert!(
        invalid.contains("expected ack") && invalid.contains("got 7"),
        "{invalid}"
    );
    let rst = line("invalid RST");
    assert!(
        rst.contains(&format!("{SERVER_V4}:8080 > {SPOOFED}:40000 seq 7"))
            && rst.contains("expected seq 1001, got 7"),
        "{rst}"
    );
    let unsolicited = line("unsolicited SYN-ACK");
    assert!(
        unsolicited.contains(&format!(
            "{CLIENT_V4}:5555 > {SERVER_V4}:9999 seq 1 ack 2\""
        )),
        "{unsolicited}"
    );

    // A burst of unsolicited SYN-ACKs: every one counted, few logged.
    let burst = 500u16;
    let server: IpAddr = SERVER_V4.parse().expect("ip");
    let client: IpAddr = CLIENT_V4.parse().expect("ip");
    let before = events(&agent).len();
    topo.inject_from_client(
        (0..burst)
            .map(|i| {
                Packet::tcp(client, 10000 + i, server, 9999)
                    .flags(SYN | ACK)
                    .seq(1)
                    .ack(2)
                    .build()
            })
            .collect(),
    );
    agent.wait_for(&topo.server, WAIT, "the burst counted", |e| {
        e.sum(
            "tcp_handshake_invalid_total",
            &[("reason", "unsolicited_synack")],
        ) == f64::from(burst) + 1.0
    });
    // The injection runs on one CPU, within a second or two.
    thread::sleep(Duration::from_secs(1));
    let logged = events(&agent).len() - before;
    eprintln!("burst: {logged} of {burst} unsolicited SYN-ACKs logged");
    assert!(
        (1..=2 * PER_CPU_PER_SECOND).contains(&logged),
        "{logged} of {burst} logged"
    );
}

#[test]
fn at_the_default_level_nothing_is_emitted() {
    let topo = Topology::ipv4_only();
    let agent = Agent::start(&topo.server, &["--iface", SERVER_IF]);
    bad_segments(&topo, &agent);
    thread::sleep(Duration::from_secs(1));
    assert_eq!(events(&agent), Vec::<String>::new());
}

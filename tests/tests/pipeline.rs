//! End to end: real TCP connections in namespaces -> kernel programs -> maps
//! -> agent -> /metrics, with exact counts.
use std::{
    net::{SocketAddr, TcpListener},
    process::Command,
};

use handshake_tests::{
    agent::{Agent, assert_one_line_error, binary},
    netns::{CLIENT_V4, Netns, SERVER_IF, SERVER_V4, SERVER_V6, Topology},
};

const N: usize = 25;

/// Runs `n` connections from the client namespace to a server in the
/// server namespace and returns once the server has accepted all of them
/// (so the final ACKs have passed the server's ingress).
fn connections(topo: &Topology, server: SocketAddr, n: usize) {
    let accepted = topo.server.accept_n(server, n);
    topo.client.connect_n(server, n);
    assert_eq!(accepted.join().expect("server thread"), n);
}

fn delta(
    before: &handshake_tests::metrics::Exposition,
    after: &handshake_tests::metrics::Exposition,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

#[test]
fn n_ipv4_connections_over_veth_complete_n_handshakes() {
    let topo = Topology::new();
    let agent = Agent::start(&topo.server, &["--iface", SERVER_IF]);
    let before = agent.scrape(&topo.server);
    connections(&topo, format!("{SERVER_V4}:8080").parse().expect("addr"), N);
    let after = agent.scrape(&topo.server);
    let inbound_v4 = [("direction", "inbound"), ("family", "ipv4")];
    let n = N as f64;
    assert_eq!(
        delta(
            &before,
            &after,
            "tcp_handshake_syn_packets_total",
            &inbound_v4
        ),
        n
    );
    assert_eq!(
        delta(&before, &after, "tcp_handshake_attempts_total", &inbound_v4),
        n
    );
    // The SYN-ACKs leave through s0: only the egress program sees them.
    assert_eq!(
        delta(&before, &after, "tcp_handshake_synack_total", &inbound_v4),
        n
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "tcp_handshake_completed_total",
            &inbound_v4
        ),
        n
    );
    assert_eq!(
        delta(&before, &after, "tcp_handshake_completed_total", &[]),
        n,
        "nothing counted elsewhere"
    );
    assert_eq!(
        delta(&before, &after, "tcp_handshake_invalid_total", &[]),
        0.0
    );
    assert_eq!(
        delta(&before, &after, "tcp_handshake_retransmits_total", &[]),
        0.0
    );
    // Both legs' latencies were recorded once per handshake.
    assert_eq!(
        delta(
            &before,
            &after,
            "tcp_handshake_synack_latency_seconds_count",
            &[("direction", "inbound")]
        ),
        n
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "tcp_handshake_ack_latency_seconds_count",
            &[("direction", "inbound")]
        ),
        n
    );
    assert!(agent.stop(), "agent exits cleanly on SIGTERM");
}

#[test]
fn n_ipv6_connections_over_veth_complete_n_handshakes() {
    let topo = Topology::new();
    let agent = Agent::start(&topo.server, &["--iface", SERVER_IF]);
    let before = agent.scrape(&topo.server);
    connections(
        &topo,
        format!("[{SERVER_V6}]:8080").parse().expect("addr"),
        N,
    );
    let after = agent.scrape(&topo.server);
    let inbound_v6 = [("direction", "inbound"), ("family", "ipv6")];
    let n = N as f64;
    assert_eq!(
        delta(&before, &after, "tcp_handshake_attempts_total", &inbound_v6),
        n
    );
    assert_eq!(
        delta(&before, &after, "tcp_handshake_synack_total", &inbound_v6),
        n
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "tcp_handshake_completed_total",
            &inbound_v6
        ),
        n
    );
    assert_eq!(
        delta(&before, &after, "tcp_handshake_completed_total", &[]),
        n
    );
}

/// Connections the server host makes itself are outbound: its SYN leaves
/// through the egress program, the SYN-ACK comes in through XDP.
#[test]
fn outbound_connections_are_counted_as_outbound() {
    let topo = Topology::new();
    let agent = Agent::start(&topo.server, &["--iface", SERVER_IF]);
    let before = agent.scrape(&topo.server);
    // Roles swapped: the listener is in the client namespace.
    let target: SocketAddr = format!("{CLIENT_V4}:9000").parse().expect("addr");
    let accepted = topo.client.accept_n(target, N);
    topo.server.connect_n(target, N);
    assert_eq!(accepted.join().expect("listener"), N);
    let after = agent.scrape(&topo.server);
    let out_v4 = [("direction", "outbound"), ("family", "ipv4")];
    assert_eq!(
        delta(&before, &after, "tcp_handshake_attempts_total", &out_v4),
        N as f64
    );
    assert_eq!(
        delta(&before, &after, "tcp_handshake_completed_total", &out_v4),
        N as f64
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "tcp_handshake_completed_total",
            &[("direction", "inbound")]
        ),
        0.0
    );
}

/// On lo, XDP (generic) sees every packet once. The agent's own scrape is a
/// handshake on lo too: the second scrape counts itself.
#[test]
fn n_connections_on_loopback_complete_n_handshakes() {
    let ns = Netns::new("lo");
    let agent = Agent::start(&ns, &["--iface", "lo"]);
    let before = agent.scrape(&ns);
    let target: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let accepted = ns.accept_n(target, N);
    ns.connect_n(target, N);
    assert_eq!(accepted.join().expect("server"), N);
    let after = agent.scrape(&ns);
    let expected = (N + 1) as f64; // N connections + the second scrape
    assert_eq!(
        delta(&before, &after, "tcp_handshake_attempts_total", &[]),
        expected
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "tcp_handshake_completed_total",
            &[("family", "ipv4")]
        ),
        expected
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "tcp_handshake_duplicate_observations_total",
            &[]
        ),
        0.0
    );
}

/// With no --iface the agent watches every interface that is up, loopback
/// included: a scrape of its own endpoint is a completed handshake.
#[test]
fn default_interfaces_count_a_scrape_of_the_endpoint() {
    let ns = Netns::new("default");
    let agent = Agent::start(&ns, &[]);
    let first = agent.scrape(&ns);
    let second = agent.scrape(&ns);
    assert_eq!(
        delta(&first, &second, "tcp_handshake_completed_total", &[]),
        1.0
    );
    assert_eq!(
        delta(&first, &second, "tcp_handshake_attempts_total", &[]),
        1.0
    );
    assert!(second.has("handshake_monitor_build_info"));
}

#[test]
fn unknown_interface_is_one_clear_line_and_non_zero_exit() {
    let out = Command::new(binary())
        .args(["run", "--iface", "no-such-if0"])
        .output()
        .expect("run agent");
    assert_one_line_error(&out, "unknown interface \"no-such-if0\"");
}

#[test]
fn port_in_use_is_one_clear_line_and_non_zero_exit() {
    let ns = Netns::new("busy");
    let out = ns.run(|| {
        let _held = TcpListener::bind("127.0.0.1:9437").expect("hold the port");
        Command::new(binary())
            .args(["run", "--iface", "lo"])
            .output()
            .expect("run agent")
    });
    assert_one_line_error(&out, "cannot listen on 127.0.0.1:9437");
}

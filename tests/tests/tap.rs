//! Tap mode, live: the agent with `--no-egress` on mirrored traffic, where
//! a SYN-ACK can arrive a little before the SYN it answers.
use std::{net::IpAddr, time::Duration};

use handshake_tests::{
    agent::Agent,
    netns::{SERVER_IF, Topology},
    packet::{ACK, Packet, SYN},
};

const WAIT: Duration = Duration::from_secs(20);

/// Neither end is the namespace's own address: the traffic of two other
/// hosts, as a mirror port delivers it.
fn mirrored(i: u8) -> (IpAddr, IpAddr) {
    (
        IpAddr::from([198, 18, 5, 2 * i + 1]),
        IpAddr::from([198, 18, 5, 2 * i + 2]),
    )
}

#[test]
fn a_synack_before_its_syn_is_one_handshake_and_a_lone_one_unsolicited() {
    let topo = Topology::ipv4_only();
    let agent = Agent::start(
        &topo.server,
        &[
            "--iface",
            SERVER_IF,
            "--no-egress",
            "--scan-interval",
            "200ms",
            // The largest programs: the reorder path and the diagnostic
            // events both in.
            "--log.level",
            "debug",
        ],
    );
    let (client, server) = mirrored(0);
    let (x, y) = (1000u32, 5000u32);
    topo.inject_from_client(vec![
        Packet::tcp(server, 443, client, 40000)
            .flags(SYN | ACK)
            .seq(y)
            .ack(x + 1)
            .build(),
        Packet::tcp(client, 40000, server, 443)
            .flags(SYN)
            .seq(x)
            .build(),
        Packet::tcp(client, 40000, server, 443)
            .flags(ACK)
            .seq(x + 1)
            .ack(y + 1)
            .build(),
    ]);
    let unsolicited = |e: &handshake_tests::metrics::Exposition| {
        e.sum(
            "tcp_handshake_invalid_total",
            &[("reason", "unsolicited_synack")],
        )
    };
    let e = agent.wait_for(&topo.server, WAIT, "the handshake completed", |e| {
        e.sum("tcp_handshake_completed_total", &[]) == 1.0
    });
    assert_eq!(e.sum("tcp_handshake_attempts_total", &[]), 1.0);
    assert_eq!(e.sum("tcp_handshake_synack_total", &[]), 1.0);
    assert_eq!(unsolicited(&e), 0.0);

    // A SYN-ACK nobody's SYN follows: unsolicited once the scan releases
    // it, and not a half-open handshake meanwhile.
    let (client, server) = mirrored(1);
    topo.inject_from_client(vec![
        Packet::tcp(server, 443, client, 40001)
            .flags(SYN | ACK)
            .seq(y)
            .ack(x + 1)
            .build(),
    ]);
    let e = agent.wait_for(&topo.server, WAIT, "the lone SYN-ACK released", |e| {
        unsolicited(e) == 1.0
    });
    assert_eq!(e.sum("tcp_handshake_half_open", &[]), 0.0);
    assert_eq!(e.sum("tcp_handshake_attempts_total", &[]), 1.0);
    assert_eq!(
        e.sum("tcp_handshake_flow_table_entries", &[("state", "live")]),
        0.0
    );
}

//! The flow table under load, end to end: a real server answers spoofed
//! SYNs from distinct sources until the agent's table is 40 %, then 80 %
//! full, and the half-open gauge must say how many handshakes are live.
use std::{
    net::{IpAddr, TcpListener},
    sync::mpsc,
    thread,
    time::Duration,
};

use handshake_tests::{
    agent::Agent,
    metrics::Exposition,
    netns::{CLIENT_V4, SERVER_IF, SERVER_V4, Topology},
    packet::{Packet, SYN},
};

const WAIT: Duration = Duration::from_secs(60);
/// The agent's default table.
const CAPACITY: u32 = handshake_common::DEFAULT_FLOW_TABLE_SIZE;
const PORT: u16 = 8090;
/// Where the spoofed sources live: inside 198.18.0.0/15, routed by the
/// server back to the client namespace, which owns none of them and
/// forwards nothing.
const SPOOFED_NET: &str = "198.19.0.0/16";

/// SYNs `from..to` of the run, each from its own source address and port.
fn spoofed_syns(server: IpAddr, from: u32, to: u32) -> Vec<Vec<u8>> {
    (from..to)
        .map(|i| {
            let src = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
            let sport = 1024 + (i % 997) as u16;
            Packet::tcp(src, sport, server, PORT)
                .flags(SYN)
                .seq(i.wrapping_mul(2_654_435_761))
                .build()
        })
        .collect()
}

fn totals(e: &Exposition) -> (f64, f64, f64) {
    (
        e.sum("tcp_handshake_half_open", &[]),
        e.sum("tcp_handshake_evicted_total", &[]),
        e.sum("tcp_handshake_flow_table_entries", &[("state", "live")]),
    )
}

/// At 40 % of the default table no handshake is evicted, and the half-open
/// gauge equals the SYNs sent; at 80 %, at most 0.1 % are, and the gauge
/// equals the SYNs sent less those evicted (README, "How it works").
#[test]
fn half_open_gauge_is_exact_at_40_and_80_percent_of_the_table() {
    let server: IpAddr = SERVER_V4.parse().expect("ip");
    let topo = Topology::ipv4_only();
    // The SYN-ACKs go to the client namespace's MAC, and die there.
    topo.server
        .ip(&[
            "route",
            "add",
            SPOOFED_NET,
            "via",
            CLIENT_V4,
            "dev",
            SERVER_IF,
        ])
        .expect("route to the spoofed sources");
    let agent = Agent::start(
        &topo.server,
        &[
            "--iface",
            SERVER_IF,
            // Nothing times out while the test runs.
            "--handshake-timeout",
            "10m",
            "--scan-interval",
            "200ms",
            "--listener-ports",
            &PORT.to_string(),
        ],
    );
    let (tx, rx) = mpsc::channel();
    topo.server.spawn(move || {
        // Never accepts: past its SYN queue, the kernel answers with SYN
        // cookies, which the agent counts alike.
        let _listener = TcpListener::bind((server, PORT)).expect("bind");
        tx.send(()).expect("ready");
        loop {
            thread::park();
        }
    });
    rx.recv().expect("listener ready");

    let at_40 = CAPACITY * 2 / 5;
    topo.inject_from_client(spoofed_syns(server, 0, at_40));
    let e = agent.wait_for(&topo.server, WAIT, "40 % of the table half-open", |e| {
        let (half_open, evicted, _) = totals(e);
        half_open + evicted >= f64::from(at_40)
    });
    let (half_open, evicted, live) = totals(&e);
    assert_eq!(evicted, 0.0, "no live handshake evicted at 40 %");
    assert_eq!(half_open, f64::from(at_40));
    assert_eq!(live, half_open, "every live entry is a half-open handshake");
    assert_eq!(
        e.sum("tcp_handshake_listener_synack_total", &[("port", "8090")]),
        f64::from(at_40),
        "the server answered every SYN"
    );

    let at_80 = CAPACITY * 4 / 5;
    topo.inject_from_client(spoofed_syns(server, at_40, at_80));
    let e = agent.wait_for(&topo.server, WAIT, "80 % of the table half-open", |e| {
        let (half_open, evicted, _) = totals(e);
        half_open + evicted >= f64::from(at_80)
    });
    let (half_open, evicted, live) = totals(&e);
    eprintln!("80 % of the table: {half_open} half-open, {evicted} evicted");
    assert!(
        evicted <= f64::from(at_80) / 1000.0,
        "{evicted} of {at_80} evicted at 80 %"
    );
    assert_eq!(
        half_open + evicted,
        f64::from(at_80),
        "every SYN accounted for"
    );
    assert_eq!(live, half_open);
    assert_eq!(e.sum("tcp_handshake_attempts_total", &[]), f64::from(at_80));
}

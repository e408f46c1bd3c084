//! The whole product against real clients, servers, tools and a real
//! Prometheus: one scenario per address family with good connections, a
//! closed port, spoofed half-open SYNs, clients whose final ACKs nftables
//! drops, and a random-source SYN flood, every number asserted exactly and
//! read back through Prometheus' HTTP API; and VLAN/QinQ-tagged handshakes
//! over the real veth path.
use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    process::Command,
    sync::mpsc,
    thread,
    time::Duration,
};

use handshake_tests::{
    agent::Agent,
    metrics::Exposition,
    netns::{CLIENT_V4, CLIENT_V6, SERVER_IF, SERVER_V4, SERVER_V6, Topology},
    packet::{ACK, Packet, SYN},
    prometheus::Prometheus,
};

const WAIT: Duration = Duration::from_secs(30);
const GOOD: usize = 20;
const CLOSED: usize = 5;
const SPOOFED: u16 = 8;
const ACK_DROPPED: usize = 3;
const FLOOD: u32 = 5000;

fn v(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    e.sum(name, labels)
}

/// Listens on `port` in the server namespace; accepts and closes forever
/// when `accept`, else leaves connections in the queue.
fn listen(topo: &Topology, addr: IpAddr, port: u16, accept: bool) {
    let (tx, rx) = mpsc::channel();
    topo.server.spawn(move || {
        let listener = TcpListener::bind((addr, port)).expect("bind");
        tx.send(()).expect("ready");
        if accept {
            for s in listener.incoming() {
                drop(s);
            }
        } else {
            // Hold the socket open, never accept.
            loop {
                thread::park();
            }
        }
    });
    rx.recv().expect("listener ready");
}

/// A listener with a backlog of one, never accepting: its SYN queue holds
/// two requests (the kernel tests len > backlog), the third pending
/// handshake on it is answered with a SYN cookie.
fn listen_backlog_one(topo: &Topology, addr: IpAddr, port: u16) {
    let (tx, rx) = mpsc::channel();
    topo.server.spawn(move || {
        let std_listener = TcpListener::bind((addr, port)).expect("bind");
        // SAFETY: re-listen on our own socket with a backlog of 1.
        let rc = unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&std_listener), 1) };
        assert_eq!(rc, 0, "listen(1)");
        tx.send(()).expect("ready");
        loop {
            thread::park();
        }
    });
    rx.recv().expect("listener ready");
}

/// Drops every non-SYN segment the client sends to `port`: its final ACKs
/// never reach the server.
fn drop_final_acks(topo: &Topology, port: u16) {
    let rules = format!(
        "table inet hm {{\n  chain out {{\n    type filter hook output priority 0;\n    tcp dport {port} tcp flags & syn == 0 drop\n  }}\n}}\n"
    );
    let ok = Command::new("ip")
        .args(["netns", "exec", &topo.client.name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().expect("stdin").write_all(rules.as_bytes())?;
            c.wait()
        })
        .expect("nft");
    assert!(ok.success(), "nftables rule");
}

fn random_source_flood_v4(topo: &Topology) {
    // hping3: exactly FLOOD SYNs from random sources. The server namespace
    // has no route to them: its SYN-ACKs go nowhere.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.client.name,
            "hping3",
            "-q",
            "-c",
            &FLOOD.to_string(),
            "-i",
            "u100",
            "-S",
            "-p",
            "8082",
        ])
        .args(["--rand-source", SERVER_V4])
        .output()
        .expect("hping3 (installed by cargo xtask setup)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{FLOOD} packets transmitted")),
        "hping3: {text}"
    );
}

fn random_source_flood_v6(topo: &Topology) {
    // hping3 has no IPv6: the same flood, hand-made, from 2001:db8::/32.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let frames = (0..FLOOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = x.to_be_bytes();
            let src = IpAddr::from([
                0x2001,
                0x0db8,
                u16::from_be_bytes([w[0], w[1]]),
                u16::from_be_bytes([w[2], w[3]]),
                0,
                0,
                0,
                u16::from_be_bytes([w[4], w[5]]),
            ]);
            Packet::tcp(
                src,
                1024 + (x % 60000) as u16,
                SERVER_V6.parse().expect("ip"),
                8082,
            )
            .flags(SYN)
            .seq(x as u32)
            .build()
        })
        .collect();
    topo.inject_from_client(frames);
}

fn scenario(v6: bool) {
    let family = if v6 { "ipv6" } else { "ipv4" };
    let (server, spoofed_src): (IpAddr, &str) = if v6 {
        (SERVER_V6.parse().expect("ip"), "2001:2::99")
    } else {
        (SERVER_V4.parse().expect("ip"), "198.18.0.99")
    };
    let topo = Topology::new();
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
            "8080,8081,8082,8083",
        ],
    );
    let prometheus = Prometheus::start(&topo.server, agent.addr);
    // Traffic only once Prometheus has a sample from before it, so its
    // rates see the traffic happen.
    prometheus.wait_for(&topo.server, "up", 1.0, WAIT);
    listen(&topo, server, 8080, true);
    listen(&topo, server, 8081, false);
    listen(&topo, server, 8082, false);
    listen_backlog_one(&topo, server, 8083);
    drop_final_acks(&topo, 8081);

    // Good connections and a closed port.
    let (good, closed) = (SocketAddr::new(server, 8080), SocketAddr::new(server, 9));
    topo.client.run(move || {
        for _ in 0..GOOD {
            drop(TcpStream::connect(good).expect("connect"));
        }
        for _ in 0..CLOSED {
            assert!(TcpStream::connect(closed).is_err(), "closed port refuses");
        }
    });
    // Spoofed SYNs: answered (two from the SYN queue, the rest with SYN
    // cookies), never acknowledged.
    topo.blackhole_via_client(spoofed_src);
    let src: IpAddr = spoofed_src.parse().expect("ip");
    let frames = (0..SPOOFED)
        .map(|i| {
            Packet::tcp(src, 30000 + i, server, 8083)
                .flags(SYN)
                .seq(1000 * u32::from(i))
                .build()
        })
        .collect();
    topo.inject_from_client(frames);
    // Clients whose final ACKs are dropped: connect() succeeds on their
    // side, the server never sees the handshake complete.
    let dropped = SocketAddr::new(server, 8081);
    let held: Vec<TcpStream> = topo.client.run(move || {
        (0..ACK_DROPPED)
            .map(|_| TcpStream::connect(dropped).expect("connect"))
            .collect()
    });

    let s0 = [
        ("iface", SERVER_IF),
        ("direction", "inbound"),
        ("family", family),
    ];
    let half_open = (SPOOFED as usize + ACK_DROPPED) as f64;
    let e = agent.wait_for(&topo.server, WAIT, "the half-open handshakes", |e| {
        v(
            e,
            "tcp_handshake_half_open",
            &[("stage", "syn_received"), ("family", family)],
        ) == half_open
    });
    assert_eq!(
        v(&e, "tcp_handshake_listener_half_open", &[("port", "8083")]),
        f64::from(SPOOFED)
    );
    assert_eq!(
        v(&e, "tcp_handshake_listener_half_open", &[("port", "8081")]),
        ACK_DROPPED as f64
    );

    if v6 {
        random_source_flood_v6(&topo)
    } else {
        random_source_flood_v4(&topo)
    }

    // Everything not completed times out (3 s); then the books balance. A
    // flood SYN whose flow-table buckets both overflowed (a random seed:
    // rarely, but it may happen) is counted as evicted instead of timed out.
    let ended_in = |e: &Exposition, stage: &str, family: Option<&str>| {
        let mut labels = vec![("stage", stage)];
        labels.extend(family.map(|f| ("family", f)));
        v(e, "tcp_handshake_timeouts_total", &labels) + v(e, "tcp_handshake_evicted_total", &labels)
    };
    let e = agent.wait_for(
        &topo.server,
        WAIT,
        "every half-open handshake to time out",
        |e| {
            v(e, "tcp_handshake_half_open", &[]) == 0.0
                && ended_in(e, "syn_sent", None) == f64::from(FLOOD)
        },
    );
    drop(held);
    let attempts = (GOOD + CLOSED + SPOOFED as usize + ACK_DROPPED) as f64 + f64::from(FLOOD);
    assert_eq!(
        v(&e, "tcp_handshake_syn_packets_total", &s0),
        attempts,
        "every SYN sent is counted"
    );
    assert_eq!(v(&e, "tcp_handshake_attempts_total", &s0), attempts);
    assert_eq!(
        v(&e, "tcp_handshake_synack_total", &s0),
        (GOOD + SPOOFED as usize + ACK_DROPPED) as f64
    );
    assert_eq!(v(&e, "tcp_handshake_completed_total", &s0), GOOD as f64);
    assert_eq!(v(&e, "tcp_handshake_rejected_total", &s0), CLOSED as f64);
    assert_eq!(v(&e, "tcp_handshake_aborted_total", &s0), 0.0);
    assert_eq!(ended_in(&e, "syn_received", Some(family)), half_open);
    assert_eq!(ended_in(&e, "syn_sent", Some(family)), f64::from(FLOOD));
    assert_eq!(v(&e, "tcp_handshake_invalid_total", &s0), 0.0);
    assert_eq!(v(&e, "tcp_handshake_syn_untracked_total", &[]), 0.0);
    assert_eq!(
        v(
            &e,
            "tcp_handshake_completed_total",
            &[("direction", "outbound")]
        ),
        0.0
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_attempts_total",
            &[("port", "8080")]
        ),
        GOOD as f64
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_attempts_total",
            &[("port", "8083")]
        ),
        f64::from(SPOOFED)
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_synack_total",
            &[("port", "8083")]
        ),
        f64::from(SPOOFED),
        "cookies are SYN-ACKs too"
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_completed_total",
            &[("port", "8080")]
        ),
        GOOD as f64
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_attempts_total",
            &[("port", "8081")]
        ),
        ACK_DROPPED as f64
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_completed_total",
            &[("port", "8081")]
        ),
        0.0
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_attempts_total",
            &[("port", "8082")]
        ),
        f64::from(FLOOD)
    );
    assert_eq!(
        v(
            &e,
            "tcp_handshake_listener_rejected_total",
            &[("port", "other")]
        ),
        CLOSED as f64
    );
    assert!(
        v(
            &e,
            "tcp_handshake_retransmits_total",
            &[("segment", "synack")]
        ) > 0.0,
        "unanswered SYN-ACKs are retransmitted"
    );
    assert_eq!(
        v(&e, "tcp_handshake_kernel_syncookies_sent_total", &[]),
        f64::from(SPOOFED - 2),
        "two SYNs queued (the kernel's queue-full test is len > backlog), the rest answered with cookies"
    );

    // The same numbers, through a real Prometheus and its HTTP API.
    let sel = format!("{{iface=\"{SERVER_IF}\",direction=\"inbound\",family=\"{family}\"}}");
    prometheus.wait_for(
        &topo.server,
        &format!("tcp_handshake_completed_total{sel}"),
        GOOD as f64,
        WAIT,
    );
    prometheus.wait_for(
        &topo.server,
        &format!("tcp_handshake_rejected_total{sel}"),
        CLOSED as f64,
        WAIT,
    );
    prometheus.wait_for(
        &topo.server,
        &format!("tcp_handshake_attempts_total{sel}"),
        attempts,
        WAIT,
    );
    prometheus.wait_for(
        &topo.server,
        &format!("tcp_handshake_timeouts_total{{stage=\"syn_received\",direction=\"inbound\",family=\"{family}\",iface=\"{SERVER_IF}\"}}"),
        half_open,
        WAIT,
    );
    // The recording rules evaluate over what was scraped: most attempts
    // (the flood's) got no SYN-ACK.
    prometheus.wait_until(
        &topo.server,
        "instance_direction:tcp_handshake_synack:ratio_rate2m{direction=\"inbound\"}",
        WAIT,
        |r| r > 0.0 && r < 0.5,
    );
}

#[test]
fn ipv4_scenario_every_outcome_exact_through_prometheus() {
    scenario(false);
}

#[test]
fn ipv6_scenario_every_outcome_exact_through_prometheus() {
    scenario(true);
}

/// This kernel has no 802.1Q devices, so VLAN traffic is crafted: tagged
/// (802.1Q) and double-tagged (QinQ) handshakes, IPv4 and IPv6, sent
/// through the veth into the server's ingress program: on TC (the default
/// on veth), which sees the frame after the kernel has moved the outer tag
/// into the skb's metadata, and on XDP, which sees every tag.
#[test]
fn vlan_and_qinq_handshakes_over_veth() {
    for hook in ["tc", "xdp"] {
        vlan_and_qinq_handshakes(hook);
    }
}

fn vlan_and_qinq_handshakes(hook: &str) {
    let topo = Topology::new();
    // Tap mode: the tagged SYN-ACKs come in on the wire too.
    let agent = Agent::start(
        &topo.server,
        &["--iface", SERVER_IF, "--no-egress", "--ingress-hook", hook],
    );
    let before = agent.scrape(&topo.server);
    let mut frames = Vec::new();
    let v4 = |port| {
        Packet::tcp(
            CLIENT_V4.parse().expect("ip"),
            port,
            SERVER_V4.parse().expect("ip"),
            80,
        )
    };
    let v6 = |port| {
        Packet::tcp(
            CLIENT_V6.parse().expect("ip"),
            port,
            SERVER_V6.parse().expect("ip"),
            80,
        )
    };
    for (i, p) in [
        v4(1001).vlan(100),
        v4(1002).qinq(10, 20),
        v6(1003).vlan(100),
        v6(1004).qinq(10, 20),
    ]
    .into_iter()
    .enumerate()
    {
        let (x, y) = (1000 * i as u32, 5000 * i as u32);
        frames.push(p.clone().flags(SYN).seq(x).build());
        frames.push(p.reply().flags(SYN | ACK).seq(y).ack(x + 1).build());
        frames.push(p.clone().flags(ACK).seq(x + 1).ack(y + 1).build());
    }
    topo.inject_from_client(frames);
    let after = agent.wait_for(&topo.server, WAIT, "4 tagged handshakes", |e| {
        v(e, "tcp_handshake_completed_total", &[]) == 4.0
    });
    for family in ["ipv4", "ipv6"] {
        let l = [
            ("iface", SERVER_IF),
            ("family", family),
            ("direction", "inbound"),
        ];
        assert_eq!(
            v(&after, "tcp_handshake_attempts_total", &l)
                - v(&before, "tcp_handshake_attempts_total", &l),
            2.0,
            "{hook}"
        );
        assert_eq!(
            v(&after, "tcp_handshake_synack_total", &l)
                - v(&before, "tcp_handshake_synack_total", &l),
            2.0,
            "{hook}"
        );
        assert_eq!(
            v(&after, "tcp_handshake_completed_total", &l)
                - v(&before, "tcp_handshake_completed_total", &l),
            2.0,
            "{hook}"
        );
    }
    assert_eq!(
        v(&after, "tcp_handshake_parse_errors_total", &[]),
        0.0,
        "{hook}"
    );
}

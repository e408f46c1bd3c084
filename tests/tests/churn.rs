//! A churning host: interfaces and listeners that come and go, bounded
//! series, slots reclaimed across restarts, scrapes that never wait.
use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener},
    process::{Command, Stdio},
    time::Duration,
};

use handshake_tests::{
    agent::{Agent, run_to_exit},
    fixtures::*,
    netns::{Topology, ip},
};

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

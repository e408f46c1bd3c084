//! Helpers the agent's end-to-end tests share: a listener, connections,
//! spoofed SYNs, a bpffs of the test's own, and readers of an exposition.
use std::{
    net::{SocketAddr, TcpListener},
    process::Command,
    sync::mpsc,
    time::Duration,
};

use crate::{
    metrics::Exposition,
    netns::{Netns, SERVER_V4, Topology},
    packet::{Packet, SYN},
};

pub const WAIT: Duration = Duration::from_secs(20);

/// A listener in the server namespace that accepts (and closes) whatever
/// arrives, until the test ends.
pub fn listen(topo: &Topology, port: u16) {
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

pub fn connect_n(topo: &Topology, port: u16, n: usize) {
    topo.client
        .connect_n(SocketAddr::new(SERVER_V4.parse().expect("ip"), port), n);
}

/// `n` SYNs to `port` from 198.18.0.99 (an address nobody has): the server
/// answers each with a SYN-ACK that no one will ever acknowledge.
pub fn spoofed_syns(topo: &Topology, port: u16, n: u16) {
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

pub fn v(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    e.sum(name, labels)
}

/// A bpffs mounted for one test, unmounted after.
pub struct BpfFs(pub std::path::PathBuf);

impl BpfFs {
    pub fn new(tag: &str) -> Self {
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

    pub fn pin_path(&self) -> String {
        self.0.join("hm").to_string_lossy().into_owned()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

pub fn xdp_attached(ns: &Netns, dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-d", "link", "show", dev])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

pub fn tcx_programs(ns: &Netns, dev: &'static str, at: aya::programs::TcAttachType) -> usize {
    ns.run(move || aya::programs::SchedClassifier::query_tcx(dev, at).map_or(0, |(_, p)| p.len()))
}

/// (XDP attached, TCX ingress programs, TCX egress programs) on `dev`.
pub fn hooks(ns: &Netns, dev: &'static str) -> (bool, usize, usize) {
    use aya::programs::TcAttachType::{Egress, Ingress};
    (
        xdp_attached(ns, dev),
        tcx_programs(ns, dev, Ingress),
        tcx_programs(ns, dev, Egress),
    )
}

/// `n` veth pairs inside `ns` (`{prefix}a{i}` and `{prefix}b{i}`), up.
pub fn veth_pairs(ns: &Netns, prefix: &str, n: usize) {
    for i in 0..n {
        let (a, b) = (format!("{prefix}a{i}"), format!("{prefix}b{i}"));
        ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])
            .expect("veth pair");
        ns.ip(&["link", "set", &a, "up"]).expect("up");
        ns.ip(&["link", "set", &b, "up"]).expect("up");
    }
}

/// The `iface` labels of an exposition that start with `prefix`.
pub fn iface_labels(e: &Exposition, prefix: &str) -> std::collections::BTreeSet<String> {
    e.text
        .split("iface=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// The `port` labels of the listener series.
pub fn port_labels(e: &Exposition) -> std::collections::BTreeSet<String> {
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

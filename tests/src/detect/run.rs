//! Runs one scenario: its namespaces, the agent with default flags, the
//! traffic on the scenario's timeline, a recording of every series each
//! second and a capture of the server's veth; saves them in its directory.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{
    record::Recorder,
    scenario::{Event, PORT, Scenario},
    traffic::{Clients, Mode, Sender, Server, SlowClients, lossless, lossy},
};
use crate::{
    agent::Agent,
    netns::{SERVER_IF, Topology},
    prometheus::Prometheus,
};

/// What a run leaves beside its recording.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Wall-clock time of the scenario's start (s since the epoch).
    pub t0_epoch: f64,
    pub clients_started: u64,
    pub clients_connected: u64,
    pub clients_refused: u64,
    pub clients_failed: u64,
    /// Frames the flood or scan sender sent; for slow clients, the
    /// handshakes they completed.
    pub sent: u64,
}

fn sleep_until(t0: Instant, s: u64) {
    let due = t0 + Duration::from_secs(s);
    let now = Instant::now();
    if due > now {
        thread::sleep(due - now);
    }
}

/// tcpdump on the server's veth, TCP only, headers only.
fn capture(topo: &Topology, file: &Path) -> Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", &topo.server.name, "tcpdump", "-q", "-i"])
        .arg(SERVER_IF)
        .args(["-s", "128", "-B", "65536", "-w"])
        .arg(file)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("tcpdump (installed by cargo xtask setup)")
}

/// Runs `sc`, writing `recording.json`, `meta.json`, `agent.log` and
/// `capture.pcap` into `dir`.
pub fn run(sc: &Scenario, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let topo = Topology::ipv4_only();
    let server = Server::start(&topo.server, PORT, sc.backlog);
    // Default flags: every interface, the host's listening ports.
    let agent = Agent::start(&topo.server, &[]);
    let prometheus = sc
        .prometheus
        .then(|| Prometheus::start_every(&topo.server, agent.addr, 5, 5));
    let mut tcpdump = capture(&topo, &dir.join("capture.pcap"))?;
    // tcpdump needs a moment to attach before the first frame.
    thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let t0_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let recorder = Recorder::start(&topo.server, agent.addr, t0);
    let clients = Clients::start(&topo.client, PORT, sc.rate);

    sleep_until(t0, sc.start_s);
    let mut sender = None;
    let mut slow = None;
    match sc.event {
        Event::Flood { rate, pulse } => {
            let on = move |e: Duration| pulse.is_none_or(|(on, off)| e.as_secs() % (on + off) < on);
            sender = Some(Sender::syn_flood(&topo, PORT, rate, on));
        }
        Event::Dead | Event::Restart => server.set(Mode::Closed),
        Event::Hung => server.set(Mode::Hang),
        Event::SynQueueCookies { rate, delay_ms } | Event::SlowClients { rate, delay_ms } => {
            let rtt = Duration::from_millis(2 * u64::from(delay_ms));
            slow = Some(SlowClients::start(&topo, PORT, rate, rtt));
        }
        Event::ClosedPortScan { rate } => sender = Some(Sender::closed_port_scan(&topo, rate)),
        Event::FlashCrowd { rate } => clients.set_rate(rate),
        Event::Lossy { loss_pct } => lossy(&topo, loss_pct),
    }

    sleep_until(t0, sc.end_s);
    let mut completed_slow = 0;
    let sent = sender.take().map_or(0, |s| s.sent.load(Ordering::Relaxed));
    match sc.event {
        Event::Dead | Event::Restart | Event::Hung => server.set(Mode::Serve),
        Event::SynQueueCookies { .. } | Event::SlowClients { .. } => {
            if let Some(s) = slow.take() {
                completed_slow = s.completed.load(Ordering::Relaxed);
            }
        }
        Event::FlashCrowd { .. } => clients.set_rate(sc.rate),
        Event::Lossy { .. } => lossless(&topo),
        Event::Flood { .. } | Event::ClosedPortScan { .. } => {}
    }

    if let Some((dead, back)) = sc.then_dead {
        sleep_until(t0, dead);
        server.set(Mode::Closed);
        sleep_until(t0, back);
        server.set(Mode::Serve);
    }
    sleep_until(t0, sc.total_s);
    if let Some(p) = &prometheus {
        let end = t0_epoch + sc.total_s as f64;
        let q = "count by (alertname, port) (ALERTS{alertstate=\"firing\"})";
        let body = p
            .query_range(&topo.server, q, t0_epoch, end, 5)
            .context("query the real Prometheus")?;
        std::fs::write(dir.join("prometheus.json"), body)?;
    }
    drop(prometheus);
    let tally = std::sync::Arc::clone(&clients.tally);
    drop(clients);
    let recording = recorder.finish();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGTERM) };
    let _ = tcpdump.wait();
    recording.save(&dir.join("recording.json"))?;
    std::fs::write(dir.join("agent.log"), agent.log())?;
    let meta = Meta {
        t0_epoch,
        clients_started: tally.started.load(Ordering::Relaxed),
        clients_connected: tally.connected.load(Ordering::Relaxed),
        clients_refused: tally.refused.load(Ordering::Relaxed),
        clients_failed: tally.failed.load(Ordering::Relaxed),
        sent: sent + completed_slow,
    };
    std::fs::write(dir.join("meta.json"), serde_json::to_string_pretty(&meta)?)?;
    drop(agent);
    drop(server);
    Ok(())
}

//! The agent as a process inside a test namespace.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    metrics::{Exposition, scrape},
    netns::Netns,
};

/// The agent binary: `HANDSHAKE_MONITOR_BIN` (set by `cargo xtask test`),
/// or the workspace's debug build.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("HANDSHAKE_MONITOR_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/handshake-monitor"),
        PathBuf::from,
    );
    assert!(path.exists(), "{} not found: run the tests with `cargo xtask test`, which builds it", path.display());
    path
}

pub const METRICS_ADDR: &str = "127.0.0.1:9437";

/// A running `handshake-monitor run` in a namespace; stopped on drop.
pub struct Agent {
    child: Child,
    ns_name: String,
    pub addr: SocketAddr,
}

impl Agent {
    /// Starts the agent in `ns` with `args` after `run`, and waits until it
    /// serves metrics (it binds first, then attaches, then serves).
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(binary())
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("start handshake-monitor");
        let addr = args
            .iter()
            .position(|a| *a == "--web.listen-address")
            .and_then(|i| args.get(i + 1))
            .unwrap_or(&METRICS_ADDR)
            .parse()
            .expect("listen address");
        let mut agent = Self { child, ns_name: ns.name.clone(), addr };
        agent.wait_ready(ns);
        agent
    }

    fn wait_ready(&mut self, ns: &Netns) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.addr;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("handshake-monitor exited early: {status}");
            }
            // A TCP connect alone would succeed as soon as the socket is
            // bound; a full scrape proves the programs are attached.
            if ns.run(move || scrape(addr, "/metrics")).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "handshake-monitor did not serve metrics within 30 s");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Scrapes the agent from inside its namespace.
    pub fn scrape(&self, ns: &Netns) -> Exposition {
        assert_eq!(ns.name, self.ns_name, "scrape from the agent's namespace");
        let addr = self.addr;
        ns.run(move || scrape(addr, "/metrics")).expect("scrape metrics")
    }

    /// Sends SIGTERM and waits; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

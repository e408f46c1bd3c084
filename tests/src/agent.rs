//! The agent as a process inside a test namespace.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
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
    assert!(
        path.exists(),
        "{} not found: run the tests with `cargo xtask test`, which builds it",
        path.display()
    );
    path
}

pub const METRICS_ADDR: &str = "127.0.0.1:9437";

/// A running `handshake-monitor run` in a namespace; stopped on drop.
pub struct Agent {
    child: Child,
    ns_name: String,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent in `ns` with `args` after `run`, and waits until it
    /// serves metrics (it binds first, then attaches, then serves).
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        Self::start_with_env(ns, args, &[])
    }

    /// As [`Agent::start`], with environment variables set.
    pub fn start_with_env(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full(ns, args, env, None)
    }

    /// As [`Agent::start_with_env`]; `addr`: where it will serve, when the
    /// flags and environment do not say (a config file does).
    pub fn start_full(ns: &Netns, args: &[&str], env: &[(&str, &str)], addr: Option<&str>) -> Self {
        Self::launch(&binary(), ns, args, env, addr)
    }

    /// As [`Agent::start`], with another build of the agent: `bin`.
    pub fn start_binary(bin: &Path, ns: &Netns, args: &[&str]) -> Self {
        Self::launch(bin, ns, args, &[], None)
    }

    /// As [`Agent::start`], with `prefix` (a command and its arguments that
    /// exec the agent, as `prlimit --nofile=...`) before the binary.
    pub fn start_prefixed(ns: &Netns, prefix: &[&str], args: &[&str]) -> Self {
        Self::launch_with(&binary(), ns, prefix, args, &[], None)
    }

    /// As [`Agent::start`], ready once `ready(addr)` holds in `ns` (for an
    /// endpoint a plain scrape cannot read: TLS, basic auth).
    pub fn start_ready_when(ns: &Netns, args: &[&str], ready: fn(SocketAddr) -> bool) -> Self {
        let mut agent = Self::spawn_with(&binary(), ns, &[], args, &[], None);
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = agent.addr;
        while !ns.run(move || ready(addr)) {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("handshake-monitor exited early: {status}: {}", agent.log());
            }
            assert!(Instant::now() < deadline, "not ready within 30 s");
            thread::sleep(Duration::from_millis(100));
        }
        // Bound first, then attached: let it finish attaching.
        thread::sleep(Duration::from_millis(500));
        agent
    }

    /// The agent's process id (the namespace runner execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// As [`Agent::start`], in a time namespace of its own whose
    /// CLOCK_MONOTONIC is `offset_s` seconds off the kernel's.
    pub fn start_in_time_namespace(ns: &Netns, offset_s: i64, args: &[&str]) -> Self {
        let offset = format!("--monotonic={offset_s}");
        let prefix = [
            "unshare",
            "--time",
            "--fork",
            "--kill-child=SIGTERM",
            offset.as_str(),
        ];
        Self::launch_with(&binary(), ns, &prefix, args, &[], None)
    }

    fn launch(
        bin: &Path,
        ns: &Netns,
        args: &[&str],
        env: &[(&str, &str)],
        addr: Option<&str>,
    ) -> Self {
        Self::launch_with(bin, ns, &[], args, env, addr)
    }

    fn launch_with(
        bin: &Path,
        ns: &Netns,
        prefix: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        addr: Option<&str>,
    ) -> Self {
        let mut agent = Self::spawn_with(bin, ns, prefix, args, env, addr);
        agent.wait_ready(ns);
        agent
    }

    fn spawn_with(
        bin: &Path,
        ns: &Netns,
        prefix: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        addr: Option<&str>,
    ) -> Self {
        let log = std::env::temp_dir().join(format!("{}.agent.log", ns.name));
        let file = std::fs::File::create(&log).expect("create agent log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .args(prefix)
            .arg(bin)
            .arg("run")
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start handshake-monitor");
        // Where it serves: flag, then environment, then `addr`, then default.
        let flag = args
            .iter()
            .position(|a| *a == "--web.listen-address")
            .and_then(|i| args.get(i + 1))
            .copied();
        let from_env = env
            .iter()
            .find(|(k, _)| *k == "HANDSHAKE_MONITOR_LISTEN_ADDRESS")
            .map(|(_, v)| *v);
        let addr: SocketAddr = flag
            .or(from_env)
            .or(addr)
            .unwrap_or(METRICS_ADDR)
            .parse()
            .expect("listen address");
        Self {
            child,
            ns_name: ns.name.clone(),
            addr,
            log,
        }
    }

    fn wait_ready(&mut self, ns: &Netns) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.addr;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("handshake-monitor exited early: {status}: {}", self.log());
            }
            // A TCP connect alone would succeed as soon as the socket is
            // bound; a full scrape proves the programs are attached.
            if ns.run(move || scrape(addr, "/metrics")).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "handshake-monitor did not serve metrics within 30 s"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Scrapes the agent from inside its namespace.
    pub fn scrape(&self, ns: &Netns) -> Exposition {
        assert_eq!(ns.name, self.ns_name, "scrape from the agent's namespace");
        let addr = self.addr;
        ns.run(move || scrape(addr, "/metrics"))
            .expect("scrape metrics")
    }

    /// What the agent logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Scrapes until `done` holds for the exposition (the agent's gauges
    /// follow its background scan), or panics after `within`.
    pub fn wait_for(
        &self,
        ns: &Netns,
        within: Duration,
        what: &str,
        done: impl Fn(&Exposition) -> bool,
    ) -> Exposition {
        let deadline = Instant::now() + within;
        loop {
            let e = self.scrape(ns);
            if done(&e) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    /// Sends SIGINT (Ctrl-C) and waits; returns whether it exited successfully.
    pub fn interrupt(mut self) -> bool {
        self.signal_and_wait(libc::SIGINT)
    }

    fn terminate(&mut self) -> bool {
        self.signal_and_wait(libc::SIGTERM)
    }

    fn signal_and_wait(&mut self, signal: libc::c_int) -> bool {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, signal) };
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
        // A failing test keeps the agent's log for whoever reads the
        // failure (its path is in /tmp, named after the namespace); a
        // passing one leaves nothing behind.
        if !thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Asserts the agent failed with exactly one line on stderr, in its error
/// format, containing `needle`.
pub fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success(), "must fail: {needle}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("handshake-monitor: error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}

/// `handshake-monitor replay PATH --format json` with `extra` flags: the
/// report, parsed, and the process's output.
pub fn replay_json(path: &Path, extra: &[&str]) -> (serde_json::Value, std::process::Output) {
    let file = path.to_string_lossy().into_owned();
    let mut args = vec!["replay", file.as_str(), "--format", "json"];
    args.extend_from_slice(extra);
    let out = run_to_exit(&[], &args, &[]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "replay printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, out)
}

/// Runs the agent binary with `args` to completion (at most 10 s: bad input
/// must fail fast, not hang) and returns its output.
pub fn run_to_exit(prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(binary());
            c
        }
        None => Command::new(binary()),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start handshake-monitor");
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("handshake-monitor {args:?} did not exit within 10 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

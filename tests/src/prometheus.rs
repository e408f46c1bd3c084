//! A real Prometheus server (Debian's), in a test namespace, scraping the
//! agent on that namespace's loopback, with the project's rules loaded.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{metrics::scrape, netns::Netns};

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    ns_name: String,
    addr: SocketAddr,
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus in `ns`, scraping `target` every second and
    /// evaluating deploy/prometheus/rules.yml every second.
    pub fn start(ns: &Netns, target: SocketAddr) -> Self {
        Self::start_every(ns, target, 1, 1)
    }

    /// As [`Prometheus::start`], scraping every `scrape_s` and evaluating
    /// the rules every `eval_s` seconds.
    pub fn start_every(ns: &Netns, target: SocketAddr, scrape_s: u64, eval_s: u64) -> Self {
        let job = format!(
            "  - job_name: handshake-monitor\n    static_configs:\n      - targets: ['{target}']\n"
        );
        Self::start_config(ns, scrape_s, eval_s, &job)
    }

    /// Scraping every second with `jobs`, the YAML list items under
    /// `scrape_configs:` (TLS, basic auth, ...).
    pub fn start_with_jobs(ns: &Netns, jobs: &str) -> Self {
        Self::start_config(ns, 1, 1, jobs)
    }

    fn start_config(ns: &Netns, scrape_s: u64, eval_s: u64, jobs: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-prometheus", ns.name));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let rules =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/rules.yml");
        let config = format!(
            "global:\n  scrape_interval: {scrape_s}s\n  evaluation_interval: {eval_s}s\nrule_files:\n  - {}\nscrape_configs:\n{jobs}",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let addr: SocketAddr = "127.0.0.1:9090".parse().expect("addr");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log"))
            .spawn()
            .expect("prometheus (installed by cargo xtask setup)");
        let p = Self {
            child,
            dir,
            ns_name: ns.name.clone(),
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ns.run(move || scrape(addr, "/-/ready")).is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s"
            );
            thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// The value of an instant query returning one sample, if it returns one.
    pub fn query(&self, ns: &Netns, promql: &str) -> Option<f64> {
        assert_eq!(ns.name, self.ns_name);
        let (addr, path) = (self.addr, format!("/api/v1/query?query={}", encode(promql)));
        let body = ns.run(move || scrape(addr, &path)).ok()?.text;
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{..},"value":[t,"v"]}]}}
        let at = body.find("\"value\":[")?;
        let rest = &body[at..];
        let v = rest.split('"').nth(3)?;
        if body.matches("\"value\":[").count() != 1 {
            return None;
        }
        v.parse().ok()
    }

    /// The body of a range query (`/api/v1/query_range`), from `start` to
    /// `end` (s since the epoch) every `step_s`.
    pub fn query_range(
        &self,
        ns: &Netns,
        promql: &str,
        start: f64,
        end: f64,
        step_s: u64,
    ) -> Option<String> {
        assert_eq!(ns.name, self.ns_name);
        let (addr, path) = (
            self.addr,
            format!(
                "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step_s}",
                encode(promql)
            ),
        );
        Some(ns.run(move || scrape(addr, &path)).ok()?.text)
    }

    /// Prometheus' own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Waits until `promql` returns one sample for which `ok` holds; returns it.
    pub fn wait_until(
        &self,
        ns: &Netns,
        promql: &str,
        within: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.query(ns, promql).filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: {promql} = {:?}",
                self.query(ns, promql)
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `promql` returns exactly `want`.
    pub fn wait_for(&self, ns: &Netns, promql: &str, want: f64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.query(ns, promql);
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: {promql} = {got:?}, expected {want}"
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

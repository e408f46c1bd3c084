//! The metrics endpoint as exporters serve it: TLS and basic auth from
//! `--web.config.file` (exporter-toolkit's YAML), checked with curl and a
//! real Prometheus; gzip on request; and a flood of idle connections that
//! neither burns the CPU nor stops scrapes.
use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use handshake_tests::{agent::Agent, netns::Netns, prometheus::Prometheus};

/// A CA, a server certificate for 127.0.0.1 signed by it, in `dir`.
fn certificates(dir: &Path) {
    let sh = |script: &str| {
        let out = Command::new("sh")
            .args(["-ec", script])
            .current_dir(dir)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=test-ca -keyout ca.key -out ca.crt 2>/dev/null",
    );
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj /CN=agent -keyout tls.key -out tls.csr 2>/dev/null",
    );
    sh("printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && \
        openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile san.ext -out tls.crt 2>/dev/null");
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("hm-web-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).expect("dir");
    Dir(d)
}

/// curl from inside `ns`: (HTTP status, headers and body).
fn curl(ns: &Netns, args: &[&str]) -> (String, String) {
    let out = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "curl", "-s", "-D", "-", "-o", "-",
        ])
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text.lines().last().unwrap_or("").to_owned();
    (code, text)
}

#[test]
fn tls_and_basic_auth_for_curl_and_a_real_prometheus() {
    let dir = temp_dir("tls");
    certificates(&dir.0);
    let hash = bcrypt::hash("s3cret", 6).expect("bcrypt");
    let config = dir.0.join("web.yml");
    std::fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .expect("web.yml");
    let ns = Netns::new("web");
    let agent = Agent::start_ready_when(
        &ns,
        &[
            "--iface",
            "lo",
            "--web.config.file",
            &config.to_string_lossy(),
        ],
        |addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok(),
    );
    let url = format!("https://127.0.0.1:{}/metrics", agent.addr.port());
    let ca = dir.0.join("ca.crt").to_string_lossy().into_owned();

    let (code, text) = curl(&ns, &["--cacert", &ca, "-u", "prometheus:s3cret", &url]);
    assert_eq!(code, "200", "{text}");
    assert!(text.contains("tcp_handshake_attempts_total"), "{text}");
    let (code, text) = curl(&ns, &["--cacert", &ca, &url]);
    assert_eq!(code, "401", "no credentials: {text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{text}"
    );
    let (code, _) = curl(&ns, &["--cacert", &ca, "-u", "prometheus:wrong", &url]);
    assert_eq!(code, "401", "a wrong password");
    let (code, _) = curl(&ns, &["--cacert", &ca, "-u", "nobody:s3cret", &url]);
    assert_eq!(code, "401", "an unknown user");
    let plain = format!("http://127.0.0.1:{}/metrics", agent.addr.port());
    let (code, _) = curl(&ns, &[&plain]);
    assert_ne!(code, "200", "plain HTTP is not served");
    let (code, text) = curl(
        &ns,
        &[
            "--cacert",
            &ca,
            "-u",
            "prometheus:s3cret",
            "-H",
            "Accept-Encoding: gzip",
            &url,
        ],
    );
    assert_eq!(code, "200");
    assert!(
        text.to_ascii_lowercase().contains("content-encoding: gzip"),
        "gzip when asked: {text}"
    );

    // A real Prometheus: one job with the CA and the password, one without.
    let jobs = format!(
        "  - job_name: tls-auth\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: prometheus\n      password: s3cret\n    static_configs:\n      - targets: ['{addr}']\n  - job_name: tls-no-auth\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    static_configs:\n      - targets: ['{addr}']\n",
        addr = agent.addr
    );
    let prometheus = Prometheus::start_with_jobs(&ns, &jobs);
    let wait = Duration::from_secs(30);
    prometheus.wait_for(&ns, "up{job=\"tls-auth\"}", 1.0, wait);
    prometheus.wait_for(&ns, "up{job=\"tls-no-auth\"}", 0.0, wait);
    prometheus.wait_until(
        &ns,
        "count(tcp_handshake_attempts_total{job=\"tls-auth\"})",
        wait,
        |n| n > 0.0,
    );
}

/// CPU ticks (user + system) of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

/// 1100 idle connections, past the 1024 open files the agent is started
/// with: it raises its own limit, the idle ones time out, and scrapes keep
/// answering without the agent spinning (it once burnt 96 % of a core on
/// failed accepts).
#[test]
fn idle_connections_neither_spin_nor_stop_scrapes() {
    let ns = Netns::new("idle");
    let agent = Agent::start_prefixed(&ns, &["prlimit", "--nofile=1024:8192"], &["--iface", "lo"]);
    let pid = agent.pid();
    let addr: SocketAddr = agent.addr;
    let held = ns.run(move || {
        // Our own limit, so that we can hold them.
        let lim = libc::rlimit {
            rlim_cur: 8192,
            rlim_max: 8192,
        };
        // SAFETY: a valid rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        (0..1100)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
            .collect::<Vec<_>>()
    });
    assert!(held.len() >= 1000, "{} connections held", held.len());
    let ticks_per_s = 100.0; // USER_HZ
    let before = cpu_ticks(pid);
    let t = Instant::now();
    let mut scrapes = 0;
    while t.elapsed() < Duration::from_secs(5) {
        let e = agent.scrape(&ns);
        assert!(e.text.contains("tcp_handshake_attempts_total"));
        scrapes += 1;
        thread::sleep(Duration::from_millis(250));
    }
    let share = (cpu_ticks(pid) - before) as f64 / ticks_per_s / t.elapsed().as_secs_f64();
    assert!(scrapes >= 10, "{scrapes} scrapes answered");
    // A request whose lines end in a bare LF is answered (it once waited
    // out the 10 s read timeout).
    let answer = ns.run(move || {
        use std::io::{Read as _, Write as _};
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\nHost: x\n\n")
            .expect("write");
        let mut head = [0u8; 15];
        s.read_exact(&mut head).map(|()| head.to_vec())
    });
    assert_eq!(answer.expect("answered").as_slice(), b"HTTP/1.1 200 OK");
    assert!(
        share < 0.2,
        "the agent used {:.0} % of a core",
        share * 100.0
    );
    drop(held);
}

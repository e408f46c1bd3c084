//! Configuration: precedence of flags, environment and config file, and
//! one clear line and a non-zero exit for every bad input.

use handshake_tests::{
    agent::{Agent, assert_one_line_error, run_to_exit},
    netns::Netns,
};

#[test]
fn bad_input_is_one_clear_line_and_a_non_zero_exit() {
    let tmp = std::env::temp_dir().join(format!("hm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let file = |name: &str, text: &str| {
        let p = tmp.join(name);
        std::fs::write(&p, text).expect("write");
        p.to_string_lossy().into_owned()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), "--handshake-timeout".into(), "5x".into()],
            "invalid value '5x' for '--handshake-timeout",
        ),
        (
            vec!["run".into(), "--ratio-window".into(), "0s".into()],
            "must be at least 1ms",
        ),
        (
            vec![
                "run".into(),
                "--web.telemetry-path".into(),
                "metrics".into(),
            ],
            "must start with '/'",
        ),
        (
            vec![
                "run".into(),
                "--web.listen-address".into(),
                "nowhere".into(),
            ],
            "invalid value 'nowhere'",
        ),
        (
            vec!["run".into(), "--xdp-mode".into(), "fast".into()],
            "invalid value 'fast' for '--xdp-mode",
        ),
        (
            vec!["run".into(), "--ingress-hook".into(), "bpf".into()],
            "invalid value 'bpf' for '--ingress-hook",
        ),
        (
            vec![
                "run".into(),
                "--ingress-hook".into(),
                "tc".into(),
                "--xdp-mode".into(),
                "driver".into(),
            ],
            "cannot go with --ingress-hook tc",
        ),
        (
            vec!["run".into(), "--flow-table-size".into(), "10".into()],
            "invalid value '10' for '--flow-table-size",
        ),
        (
            vec!["run".into(), "--iface".into(), "nope0".into()],
            "unknown interface \"nope0\"",
        ),
        (
            vec!["run".into(), "--config".into(), "/nonexistent.toml".into()],
            "cannot read config file /nonexistent.toml",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file("syntax.toml", "iface = [\n"),
            ],
            "malformed config file",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file("key.toml", "colour = \"blue\"\n"),
            ],
            "unknown key \"colour\"",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file("value.toml", "handshake-timeout = \"soon\"\n"),
            ],
            "invalid value 'soon'",
        ),
        (
            vec![
                "run".into(),
                "--pin-path".into(),
                tmp.to_string_lossy().into_owned(),
            ],
            "is not on a BPF filesystem",
        ),
        (
            vec!["frobnicate".into()],
            "unrecognized subcommand 'frobnicate'",
        ),
        (
            vec!["run".into(), "--config".into(), "/dev/zero".into()],
            "not a regular file of at most 1 MiB",
        ),
        (
            vec!["run".into(), "--scan-interval".into(), "1ms".into()],
            "must be at least 100ms",
        ),
        (
            vec![
                "run".into(),
                "--handshake-timeout".into(),
                "500000years".into(),
            ],
            "must be at most 24h",
        ),
        (
            // A value the flag overrides is still checked.
            vec![
                "run".into(),
                "--config".into(),
                file("overridden.toml", "handshake-timeout = \"soon\"\n"),
                "--handshake-timeout".into(),
                "5s".into(),
            ],
            "invalid value 'soon'",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file(
                    "overridden-ratio.toml",
                    "\"detector.completion-ratio\" = 5.0\n",
                ),
                "--detector.completion-ratio".into(),
                "0.5".into(),
            ],
            "--detector.completion-ratio must be in (0, 1], got 5",
        ),
        (
            vec![
                "run".into(),
                "--web.config.file".into(),
                file(
                    "web.yml",
                    "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  cipher_suites: [x]\n",
                ),
            ],
            "unknown field `cipher_suites`",
        ),
        (
            vec![
                "run".into(),
                "--detector.completion-ratio".into(),
                "5".into(),
            ],
            "--detector.completion-ratio must be in (0, 1], got 5",
        ),
        (
            vec![
                "run".into(),
                "--detector.completion-ratio".into(),
                "NaN".into(),
            ],
            "--detector.completion-ratio must be in (0, 1], got NaN",
        ),
        (
            vec!["run".into(), "--detector.min-syn-rate=-1".into()],
            "--detector.min-syn-rate must be a positive number",
        ),
        (
            vec!["run".into(), "--detector.window".into(), "100ms".into()],
            "--detector.window must be between 1s and 1h",
        ),
        (
            vec![
                "run".into(),
                "--listener-ports".into(),
                (1..=2000)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            "--listener-ports: at most 1023 ports, got 2000",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                file("ratio.toml", "\"detector.completion-ratio\" = 1.5\n"),
            ],
            "--detector.completion-ratio must be in (0, 1], got 1.5",
        ),
    ];
    for (args, needle) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_one_line_error(&run_to_exit(&[], &args, &[]), needle);
    }
    // No privilege: the same binary as an unprivileged user.
    let out = run_to_exit(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ],
        &["run", "--iface", "lo"],
        &[],
    );
    assert_one_line_error(
        &out,
        "missing privilege: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN",
    );
    let _ = std::fs::remove_dir_all(tmp);
}

/// Flag beats environment beats config file beats default.
#[test]
fn config_file_environment_and_flags_in_that_order() {
    let ns = Netns::new("config");
    let path = std::env::temp_dir().join(format!("{}.toml", ns.name));
    std::fs::write(
        &path,
        "\"web.listen-address\" = \"127.0.0.1:9500\"\nlistener-ports = [8080]\nhandshake-timeout = \"45s\"\niface = [\"lo\"]\n",
    )
    .expect("write config");
    let config = path.to_string_lossy().into_owned();
    // Config alone: address and ports from the file.
    let agent = Agent::start_full(&ns, &["--config", &config], &[], Some("127.0.0.1:9500"));
    assert!(
        agent
            .scrape(&ns)
            .text
            .contains("tcp_handshake_listener_attempts_total{port=\"8080\"}")
    );
    drop(agent);
    // The environment beats the file; a flag beats the environment.
    let agent = Agent::start_full(
        &ns,
        &[
            "--config",
            &config,
            "--web.listen-address",
            "127.0.0.1:9600",
        ],
        &[
            ("HANDSHAKE_MONITOR_LISTENER_PORTS", "9090"),
            ("HANDSHAKE_MONITOR_LISTEN_ADDRESS", "127.0.0.1:9700"),
        ],
        None,
    );
    assert_eq!(agent.addr.port(), 9600);
    let text = agent.scrape(&ns).text;
    assert!(
        text.contains("port=\"9090\"") && !text.contains("port=\"8080\""),
        "{text}"
    );
    let _ = std::fs::remove_file(path);
}

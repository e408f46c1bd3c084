//! What operators deploy: the Prometheus rules (checked and unit-tested with
//! promtool), the Grafana dashboard and the rules naming only metrics the
//! agent exports, the systemd unit (systemd-analyze verify) and the
//! Kubernetes manifest (validated against the Kubernetes schema).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use handshake_user::exposition::reference;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (installed by cargo xtask setup)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let text = run(Command::new("promtool")
        .args(["check", "rules", "rules.yml"])
        .current_dir(&dir));
    assert!(text.contains("SUCCESS: 25 rules found"), "{text}");
    // Hand-made series, one behaviour each; then series recorded from real
    // incidents and benign events by `cargo xtask detect --write-tests`.
    for file in ["rules_test.yml", "recorded_test.yml"] {
        let text = run(Command::new("promtool")
            .args(["test", "rules", file])
            .current_dir(&dir));
        assert!(text.contains("SUCCESS"), "{file}: {text}");
    }
}

/// Metric-like names in a PromQL text: identifiers that mention ours.
fn names_in(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.contains("tcp_handshake") || t.contains("handshake_monitor"))
        .map(str::to_owned)
        .collect()
}

/// What a query may name: the agent's families (histograms with their
/// series suffixes) and the recording rules.
fn known_names() -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for m in reference() {
        if m.kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                known.insert(format!("{}{suffix}", m.name));
            }
        } else {
            known.insert(m.name.clone());
        }
    }
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/rules.yml")).expect("rules.yml");
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- record: ") {
            known.insert(name.trim().to_owned());
        }
    }
    known
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

#[test]
fn dashboard_and_rules_name_only_metrics_the_agent_exports() {
    let known = known_names();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/handshake-monitor.json"))
            .expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let mut found = Vec::new();
    exprs(&dashboard, &mut found);
    assert!(
        found.len() >= 25,
        "the dashboard has its expressions: {}",
        found.len()
    );
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/rules.yml")).expect("rules.yml");
    let mut unknown = BTreeSet::new();
    let mut used = BTreeSet::new();
    for text in found.iter().map(String::as_str).chain([rules.as_str()]) {
        for name in names_in(text) {
            if !known.contains(&name) {
                unknown.insert(name.clone());
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "not exported by the agent nor recorded: {unknown:?}"
    );
    // The dashboard shows the funnel, ratios, half-open, latency and pressure.
    let mut needed: Vec<&str> = vec![
        "tcp_handshake_attempts_total",
        "tcp_handshake_completed_total",
        "instance_direction:tcp_handshake_completion:ratio_rate2m",
        "tcp_handshake_half_open",
        "tcp_handshake_synack_latency_seconds_bucket",
        "tcp_handshake_ack_latency_seconds_bucket",
        "instance:tcp_handshake_flow_table_live:ratio",
        "tcp_handshake_flow_table_entries",
        "tcp_handshake_evicted_total",
        "tcp_handshake_syn_untracked_total",
        "tcp_handshake_listener_attempts_total",
        "instance_port:tcp_handshake_listener_refused:ratio_rate2m",
        "instance_port:tcp_handshake_listener_unanswered:ratio_rate2m",
        "tcp_handshake_detector_firing",
    ];
    // Every kernel counter the agent exports.
    needed.extend(handshake_user::netstat::FIELDS.iter().map(|(_, m, _)| *m));
    for needed in needed {
        assert!(
            found.iter().any(|e| names_in(e).contains(needed)),
            "dashboard lacks {needed}"
        );
    }
}

/// What a query returns, from its shape: a per-second rate, a ratio,
/// seconds (a duration gauge, or a histogram of seconds in a heatmap), a
/// 0/1 state, or a count.
fn query_kind(expr: &str) -> &'static str {
    if expr.contains("_seconds_bucket") {
        "seconds"
    } else if expr.contains(":ratio") {
        "ratio"
    } else if expr.contains("rate(") {
        "per second"
    } else if expr.contains("detector_firing") {
        "0/1"
    } else if expr.contains("_seconds") {
        "seconds"
    } else {
        "count"
    }
}

fn units_for(kind: &str) -> &'static [&'static str] {
    match kind {
        "per second" => &["cps", "pps", "reqps", "ops"],
        "ratio" => &["percentunit"],
        "seconds" => &["s"],
        "0/1" => &["bool"],
        _ => &["short", "none"],
    }
}

#[test]
fn each_dashboard_panel_has_one_unit_and_it_fits_its_queries() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/handshake-monitor.json"))
            .expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut checked = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or("?");
        let exprs: Vec<&str> = p["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .filter_map(|t| t["expr"].as_str())
            .collect();
        let kinds: BTreeSet<&str> = exprs.iter().map(|e| query_kind(e)).collect();
        assert_eq!(kinds.len(), 1, "{title}: one axis mixes {kinds:?}");
        let kind = kinds.first().copied().unwrap_or_default();
        let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
        assert!(
            units_for(kind).contains(&unit),
            "{title}: unit {unit:?} for queries returning {kind}"
        );
        assert!(
            p["fieldConfig"]["overrides"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{title}: overrides would need their own check"
        );
        if kind == "ratio" {
            assert_eq!(
                p["fieldConfig"]["defaults"]["max"], 1,
                "{title}: ratios up to 1"
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked} panels");
}

#[test]
fn systemd_unit_verifies_with_least_capabilities() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/handshake-monitor.service"))
        .expect("unit");
    for line in [
        "AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "DynamicUser=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    // systemd-analyze checks that ExecStart= exists: point it at the build.
    let dir = std::env::temp_dir().join(format!("hm-systemd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let unit = unit.replace(
        "/usr/local/bin/handshake-monitor",
        &handshake_tests::agent::binary().display().to_string(),
    );
    let path = dir.join("handshake-monitor.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && !text.contains("handshake-monitor.service:"),
        "systemd-analyze verify:\n{text}"
    );
}

#[test]
fn kubernetes_manifest_validates_against_the_schema() {
    let text = run(Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(repo().join("deploy/kubernetes/daemonset.yaml")));
    assert_eq!(text.matches("passed for resource").count(), 2, "{text}");
    let manifest =
        std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).expect("manifest");
    for needed in [
        "hostNetwork: true",
        "- BPF",
        "- PERFMON",
        "- NET_ADMIN",
        "path: /sys/fs/bpf",
        "prometheus.io/scrape: \"true\"",
        "--pin-path=/sys/fs/bpf/handshake-monitor",
    ] {
        assert!(manifest.contains(needed), "manifest lacks {needed}");
    }
    let dockerfile =
        std::fs::read_to_string(repo().join("deploy/kubernetes/Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("cargo xtask setup")
            && dockerfile.contains("target/release/handshake-monitor"),
        "{dockerfile}"
    );
}

//! Scores a recorded scenario: the shipped rules evaluated by Prometheus'
//! own engine (`promtool test rules` on the recorded series, at a given
//! scrape and evaluation interval), the live detector (its firing gauge,
//! recorded each second) and the detector in `replay` on the capture.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::Path,
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use handshake_user::series::compress;

use super::{
    record::Recording,
    scenario::{PORT, Scenario},
};

/// Which alerts (or conditions) fire at each evaluation time.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Seconds between two points.
    pub step_s: f64,
    /// (time in seconds, names firing); per-port alerts as `Name{port=N}`.
    pub points: Vec<(f64, BTreeSet<String>)>,
}

/// How a timeline measures up against a scenario.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Seconds from onset to the first expected alert; None: never fired.
    pub fire_s: Option<f64>,
    /// Seconds from the end until every alert of the incident is quiet for
    /// good; None: still firing when the recording ended.
    pub resolve_s: Option<f64>,
    /// Seconds of alerts that should not have fired: unexpected names,
    /// anything before the onset or past the end plus `grace_s`, anything
    /// at all in a benign scenario.
    pub false_s: f64,
    /// Names that fired when they should not have.
    pub false_names: BTreeSet<String>,
}

fn base_name(name: &str) -> &str {
    name.split('{').next().unwrap_or(name)
}

/// An expected name matches if it is the alert, with port="8080" for the
/// per-port ones.
fn matches_expected(name: &str, expected: &[&str]) -> bool {
    let base = base_name(name);
    expected.contains(&base) && (!name.contains('{') || name.contains(&format!("port={PORT}")))
}

impl Timeline {
    /// The points from `from` (inclusive) to `to` (exclusive) seconds.
    pub fn between(&self, from: f64, to: f64) -> Self {
        Self {
            step_s: self.step_s,
            points: self
                .points
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .cloned()
                .collect(),
        }
    }

    /// Scores against `sc` with `expect` and `allow`; `grace_s`: how long
    /// after the end firing is still counted as resolving (the goal).
    pub fn score(&self, sc: &Scenario, expect: &[&str], allow: &[&str], grace_s: f64) -> Score {
        let (a, b) = (sc.start_s as f64, sc.end_s as f64);
        let mut s = Score::default();
        let mut last_incident_firing: Option<f64> = None;
        for (t, names) in &self.points {
            for name in names {
                let wanted = sc.incident && matches_expected(name, expect);
                let allowed = sc.incident && (wanted || allow.contains(&base_name(name)));
                let in_incident = *t >= a && *t < b + grace_s;
                if wanted && *t >= a && s.fire_s.is_none() {
                    s.fire_s = Some(t - a);
                }
                if allowed && *t >= a {
                    last_incident_firing = Some(*t);
                }
                if !(allowed && in_incident) {
                    s.false_s += self.step_s;
                    s.false_names.insert(name.clone());
                }
            }
        }
        if sc.incident {
            let end_of_record = self.points.last().map_or(b, |(t, _)| *t);
            s.resolve_s = match last_incident_firing {
                None => Some(0.0),
                Some(t) if t + self.step_s > end_of_record => None,
                Some(t) => Some((t + self.step_s - b).max(0.0)),
            };
        }
        s
    }
}

/// The recorded series as the `input_series` of a promtool test: sampled
/// every `interval_s`, with the labels a scrape adds.
fn input_series(rec: &Recording, interval_s: u64, end_s: u64) -> String {
    let mut out = String::new();
    let times: Vec<f64> = (0..=end_s / interval_s)
        .map(|k| (k * interval_s) as f64)
        .collect();
    let target = "instance=\"scenario\",job=\"handshake-monitor\"";
    let _ = writeln!(out, "      - series: 'up{{{target}}}'");
    let up: Vec<Option<f64>> = times.iter().map(|_| Some(1.0)).collect();
    let _ = writeln!(out, "        values: '{}'", compress(&up));
    for series in rec.series.keys() {
        let name = match series.split_once('{') {
            Some((name, rest)) => format!("{name}{{{target},{rest}"),
            None => format!("{series}{{{target}}}"),
        };
        let values: Vec<Option<f64>> = times.iter().map(|t| rec.at(series, *t)).collect();
        let _ = writeln!(out, "      - series: '{name}'");
        let _ = writeln!(out, "        values: '{}'", compress(&values));
    }
    out
}

/// Go's Duration text ("1m5s", "20s", "1h2m0s") in seconds.
fn go_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
        } else {
            let v: f64 = num.parse().ok()?;
            num.clear();
            total += v * match c {
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                _ => return None,
            };
        }
    }
    num.is_empty().then_some(total)
}

/// Names in promtool's `got:` text: `{alertname="X", port="8080"} 1E+00, ...`.
fn got_names(got: &str) -> BTreeSet<String> {
    got.split('{')
        .skip(1)
        .filter_map(|part| {
            let labels = part.split('}').next()?;
            let mut alert = None;
            let mut port = None;
            for kv in labels.split(", ") {
                if let Some(v) = kv.strip_prefix("alertname=") {
                    alert = Some(v.trim_matches('"').to_owned());
                } else if let Some(v) = kv.strip_prefix("port=") {
                    port = Some(v.trim_matches('"').to_owned());
                }
            }
            let alert = alert?;
            Some(match port {
                Some(p) => format!("{alert}{{port={p}}}"),
                None => alert,
            })
        })
        .collect()
}

/// The shipped rules (`rules`) on the recording, scraped every
/// `interval_s` and evaluated every `eval_s`, by promtool.
pub fn rules_timeline(
    rec: &Recording,
    rules: &Path,
    interval_s: u64,
    eval_s: u64,
    end_s: u64,
    work: &Path,
) -> Result<Timeline> {
    let mut test = format!(
        "rule_files:\n  - {}\nevaluation_interval: {eval_s}s\ntests:\n  - interval: {interval_s}s\n    input_series:\n",
        rules.display()
    );
    test.push_str(&input_series(rec, interval_s, end_s));
    test.push_str("    promql_expr_test:\n");
    let expr = "count by (alertname, port) (ALERTS{alertstate=\"firing\"})";
    let steps: Vec<u64> = (0..=end_s / eval_s).map(|k| k * eval_s).collect();
    for t in &steps {
        let _ = writeln!(
            test,
            "      - expr: '{expr}'\n        eval_time: {t}s\n        exp_samples: []"
        );
    }
    let file = work.join(format!("promtool-{interval_s}s-{eval_s}s.yml"));
    std::fs::write(&file, test)?;
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .context("promtool (installed by cargo xtask setup)")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !text.contains("FAILED:") {
        bail!("promtool test rules {}: {text}", file.display());
    }
    let mut firing: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut at: Option<u64> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("expr: ") {
            at = rest
                .rsplit_once("time: ")
                .and_then(|(_, t)| go_duration(t.trim_end_matches(',')))
                .map(|t| t as u64);
        } else if let (Some(got), Some(t)) = (line.strip_prefix("got: "), at) {
            firing.entry(t).or_default().extend(got_names(got));
        }
    }
    Ok(Timeline {
        step_s: eval_s as f64,
        points: steps
            .iter()
            .map(|t| (*t as f64, firing.remove(t).unwrap_or_default()))
            .collect(),
    })
}

/// The live detector: its recorded `tcp_handshake_detector_firing` gauges.
pub fn detector_timeline(rec: &Recording) -> Timeline {
    let conditions: Vec<(String, &Vec<Option<f64>>)> = rec
        .series
        .iter()
        .filter_map(|(series, values)| {
            let c = series
                .strip_prefix("tcp_handshake_detector_firing{condition=\"")?
                .strip_suffix("\"}")?;
            Some((c.to_owned(), values))
        })
        .collect();
    Timeline {
        step_s: super::record::RESOLUTION_S as f64,
        points: rec
            .t
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let names = conditions
                    .iter()
                    .filter(|(_, v)| v.get(i).copied().flatten() == Some(1.0))
                    .map(|(c, _)| c.clone())
                    .collect();
                (*t, names)
            })
            .collect(),
    }
}

/// A real Prometheus' alerts: the body of its range query of
/// `count by (alertname, port) (ALERTS{alertstate="firing"})`, on the
/// scenario's clock.
pub fn prometheus_timeline(body: &str, t0_epoch: f64, step_s: u64, end_s: u64) -> Result<Timeline> {
    let v: serde_json::Value = serde_json::from_str(body)?;
    anyhow::ensure!(v["status"] == "success", "Prometheus: {body}");
    let mut firing: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for series in v["data"]["result"].as_array().into_iter().flatten() {
        let alert = series["metric"]["alertname"].as_str().unwrap_or("?");
        let name = match series["metric"]["port"].as_str() {
            Some(p) => format!("{alert}{{port={p}}}"),
            None => alert.to_owned(),
        };
        for point in series["values"].as_array().into_iter().flatten() {
            let at = point[0].as_f64().unwrap_or(0.0) - t0_epoch;
            let k = (at / step_s as f64).round().max(0.0) as u64 * step_s;
            firing.entry(k).or_default().insert(name.clone());
        }
    }
    Ok(Timeline {
        step_s: step_s as f64,
        points: (0..=end_s / step_s)
            .map(|k| {
                let t = k * step_s;
                (t as f64, firing.remove(&t).unwrap_or_default())
            })
            .collect(),
    })
}

/// Capture time (s since the epoch) of a pcap's first packet.
fn first_packet_epoch(pcap: &Path) -> Result<f64> {
    let bytes = std::fs::read(pcap)?;
    anyhow::ensure!(bytes.len() >= 40, "{}: no packet", pcap.display());
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let nanos = match magic {
        0xa1b2_c3d4 => false,
        0xa1b2_3c4d => true,
        _ => bail!("{}: not a little-endian pcap", pcap.display()),
    };
    let sec = u32::from_le_bytes(bytes[24..28].try_into()?);
    let frac = u32::from_le_bytes(bytes[28..32].try_into()?);
    Ok(f64::from(sec) + f64::from(frac) / if nanos { 1e9 } else { 1e6 })
}

/// The detector in `replay` on the scenario's capture, on capture time,
/// as a timeline on the scenario's clock.
pub fn replay_timeline(bin: &Path, pcap: &Path, t0_epoch: f64, end_s: u64) -> Result<Timeline> {
    let out = Command::new(bin)
        .args(["replay", "--format", "json", "--listener-ports"])
        .arg(PORT.to_string())
        .arg(pcap)
        .output()
        .context("handshake-monitor replay")?;
    anyhow::ensure!(
        out.status.success(),
        "replay {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let offset = first_packet_epoch(pcap)? - t0_epoch;
    let mut changes: Vec<(f64, String, bool)> = Vec::new();
    for e in report["detector"].as_array().into_iter().flatten() {
        let at = e["at_seconds"].as_f64().unwrap_or(0.0) + offset;
        let line = e["line"].as_str().unwrap_or("");
        let field = |k: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(k))
                .unwrap_or("")
                .to_owned()
        };
        changes.push((at, field("condition="), field("state=") == "firing"));
    }
    let mut firing = BTreeSet::new();
    let mut points = Vec::new();
    let mut next = 0;
    for t in 0..=end_s {
        let t = t as f64;
        while let Some((at, c, on)) = changes.get(next)
            && *at <= t
        {
            if *on {
                firing.insert(c.clone());
            } else {
                firing.remove(c);
            }
            next += 1;
        }
        points.push((t, firing.clone()));
    }
    Ok(Timeline {
        step_s: 1.0,
        points,
    })
}

/// The names of the metrics `rules` reads.
pub fn metrics_read_by(rules: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("tcp_handshake_") && !t.contains(':'))
        .map(str::to_owned)
        .collect();
    names.insert("up".to_owned());
    names
}

/// A promtool test of the shipped rules on a recorded scenario: its series
/// (those the rules read) every `interval_s`, and what the goals say must
/// hold: nothing firing before the onset; the expected alerts (with
/// port="8080" for the per-port ones) firing 3 minutes after it; nothing 3
/// minutes after the end. A benign scenario: nothing, ever.
pub fn recorded_test(sc: &Scenario, rec: &Recording, rules: &str, interval_s: u64) -> String {
    let keep = metrics_read_by(rules);
    let mut filtered = Recording {
        t: rec.t.clone(),
        series: BTreeMap::new(),
    };
    for (series, values) in &rec.series {
        let name = series.split('{').next().unwrap_or(series);
        if keep.contains(name) {
            filtered.series.insert(series.clone(), values.clone());
        }
    }
    let end = rec.t.last().map_or(sc.total_s, |t| *t as u64);
    let mut out = format!(
        "  # {}: {} (recorded by `cargo xtask detect`; {} from {} s to {} s)\n  - interval: {interval_s}s\n    input_series:\n",
        sc.name,
        sc.about,
        if sc.incident { "incident" } else { "event" },
        sc.start_s,
        sc.end_s
    );
    out.push_str(&input_series(&filtered, interval_s, end));
    out.push_str("    promql_expr_test:\n");
    let none = |out: &mut String, t: u64| {
        let _ = writeln!(
            out,
            "      - expr: 'ALERTS{{alertstate=\"firing\"}}'\n        eval_time: {t}s\n        exp_samples: []"
        );
    };
    if sc.incident {
        none(&mut out, sc.start_s.saturating_sub(5));
        let names = sc.expect.join("|");
        let _ = writeln!(
            out,
            "      - expr: 'count by (alertname, port) (ALERTS{{alertstate=\"firing\",alertname=~\"{names}\"}})'\n        eval_time: {}s\n        exp_samples:",
            sc.start_s + 180
        );
        for a in sc.expect {
            let port = if a.contains("Listener") {
                format!(",port=\"{PORT}\"")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "          - labels: '{{alertname=\"{a}\"{port}}}'\n            value: 1"
            );
        }
        none(&mut out, (sc.end_s + 180).min(end));
    } else {
        for t in [sc.start_s, sc.end_s, (sc.end_s + 60).min(end)] {
            none(&mut out, t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::scenario::all;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("20s"), Some(20.0));
        assert_eq!(go_duration("1m5s"), Some(65.0));
        assert_eq!(go_duration("1h2m0s"), Some(3720.0));
        assert_eq!(go_duration("0s"), Some(0.0));
    }

    #[test]
    fn promtool_got_lines() {
        let got = "{alertname=\"TCPHandshakeListenerRefusing\", port=\"8080\"} 1E+00, {alertname=\"TCPHandshakeSynCookies\"} 1E+00";
        assert_eq!(
            got_names(got),
            BTreeSet::from([
                "TCPHandshakeListenerRefusing{port=8080}".to_owned(),
                "TCPHandshakeSynCookies".to_owned()
            ])
        );
    }

    fn timeline(points: &[(f64, &[&str])]) -> Timeline {
        Timeline {
            step_s: 15.0,
            points: points
                .iter()
                .map(|(t, n)| (*t, n.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
        }
    }

    #[test]
    fn scores_time_to_fire_resolve_and_false_alarms() {
        let sc = all()
            .into_iter()
            .find(|s| s.name == "dead_1")
            .expect("dead_1");
        let refusing = "TCPHandshakeListenerRefusing{port=8080}";
        let t = timeline(&[
            (45.0, &[]),
            (150.0, &[refusing]),
            (270.0, &[refusing]),
            (285.0, &[refusing, "TCPHandshakeSynCookies"]),
            (300.0, &[]),
            (465.0, &[]),
        ]);
        let s = t.score(&sc, sc.expect, sc.allow, 180.0);
        assert_eq!(s.fire_s, Some(90.0));
        assert_eq!(s.resolve_s, Some(30.0));
        assert_eq!(s.false_s, 15.0);
        assert_eq!(
            s.false_names,
            BTreeSet::from(["TCPHandshakeSynCookies".to_owned()])
        );
        // The wrong port does not count as paging on the dead listener.
        let other = timeline(&[(150.0, &["TCPHandshakeListenerRefusing{port=9437}"])]);
        assert_eq!(other.score(&sc, sc.expect, sc.allow, 180.0).fire_s, None);
    }
}

//! Metrics as time series over capture time, for `replay --format
//! openmetrics` (timestamped samples, for `promtool tsdb
//! create-blocks-from openmetrics`) and `replay --format promtool` (the
//! `input_series` of a `promtool test rules` file). Either way an operator
//! can run the shipped alert rules, or their own, against a capture of a
//! real incident.
use std::{collections::BTreeMap, fmt::Write as _};

use prometheus::proto::{MetricFamily, MetricType};

/// Labels every series gets, as Prometheus would add them at scrape time.
pub const JOB: &str = "handshake-monitor";
pub const INSTANCE: &str = "replay";

/// One series: its sample name and its labels, rendered `{a="b",...}`.
type SeriesId = (String, String);

#[derive(Debug, Default)]
pub struct Recorder {
    /// Family name -> (type, help).
    families: BTreeMap<String, (MetricType, String)>,
    /// Family name -> its series, each with (step index, value).
    series: BTreeMap<String, BTreeMap<SeriesId, Vec<(usize, f64)>>>,
    /// Capture time (ns since the epoch) of each step.
    steps: Vec<u64>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_text(pairs: &[(String, String)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

impl Recorder {
    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// Records every sample of `families` as step `t_ns`, with `job` and
    /// `instance` labels added, and `up` = 1.
    pub fn record(&mut self, t_ns: u64, families: &[MetricFamily]) {
        let step = self.steps.len();
        self.steps.push(t_ns);
        let base = vec![
            ("instance".to_owned(), INSTANCE.to_owned()),
            ("job".to_owned(), JOB.to_owned()),
        ];
        self.add(step, "up", MetricType::GAUGE, "", "up", base.clone(), 1.0);
        for f in families {
            let name = f.name();
            for m in f.get_metric() {
                let mut labels = base.clone();
                labels.extend(
                    m.get_label()
                        .iter()
                        .map(|l| (l.name().to_owned(), l.value().to_owned())),
                );
                labels.sort();
                let kind = f.get_field_type();
                let help = f.help();
                match kind {
                    MetricType::COUNTER => {
                        let v = m.get_counter().get_value();
                        self.add(step, name, kind, help, name, labels, v);
                    }
                    MetricType::GAUGE => {
                        let v = m.get_gauge().get_value();
                        self.add(step, name, kind, help, name, labels, v);
                    }
                    MetricType::HISTOGRAM => {
                        let h = m.get_histogram();
                        for b in h.get_bucket() {
                            let mut l = labels.clone();
                            l.push(("le".to_owned(), number(b.upper_bound())));
                            let n = b.cumulative_count() as f64;
                            self.add(step, name, kind, help, &format!("{name}_bucket"), l, n);
                        }
                        let mut l = labels.clone();
                        l.push(("le".to_owned(), "+Inf".to_owned()));
                        let count = h.get_sample_count() as f64;
                        self.add(step, name, kind, help, &format!("{name}_bucket"), l, count);
                        let sum = h.get_sample_sum();
                        let (s, c) = (format!("{name}_sum"), format!("{name}_count"));
                        self.add(step, name, kind, help, &s, labels.clone(), sum);
                        self.add(step, name, kind, help, &c, labels, count);
                    }
                    _ => {}
                }
            }
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one sample and where it goes")]
    fn add(
        &mut self,
        step: usize,
        family: &str,
        kind: MetricType,
        help: &str,
        sample: &str,
        labels: Vec<(String, String)>,
        v: f64,
    ) {
        self.families
            .entry(family.to_owned())
            .or_insert_with(|| (kind, help.to_owned()));
        self.series
            .entry(family.to_owned())
            .or_default()
            .entry((sample.to_owned(), labels_text(&labels)))
            .or_default()
            .push((step, v));
    }

    /// OpenMetrics text, every family once with all its samples, each with
    /// its capture timestamp (seconds), ending in `# EOF`.
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        for (family, series) in &self.series {
            let (kind, help) = &self.families[family];
            let (type_name, om_family) = match *kind {
                MetricType::COUNTER => (
                    "counter",
                    family.strip_suffix("_total").unwrap_or(family).to_owned(),
                ),
                MetricType::HISTOGRAM => ("histogram", family.clone()),
                _ => ("gauge", family.clone()),
            };
            let _ = writeln!(out, "# TYPE {om_family} {type_name}");
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {om_family} {}", escape(help));
            }
            for ((sample, labels), points) in series {
                for (step, v) in points {
                    let t = self.steps[*step];
                    let _ = writeln!(
                        out,
                        "{sample}{labels} {} {}.{:03}",
                        number(*v),
                        t / 1_000_000_000,
                        (t % 1_000_000_000) / 1_000_000
                    );
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }

    /// The `interval` and `input_series` of a promtool rule test, step 0 at
    /// the capture's first step; runs of a constant increase written as
    /// promtool's `a+bxn`.
    pub fn promtool(&self, step_s: u64) -> String {
        let mut out = String::new();
        let first = self.steps.first().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "# handshake-monitor replay: {} steps of {step_s}s; step 0 is capture time {}.{:09}",
            self.steps.len(),
            first / 1_000_000_000,
            first % 1_000_000_000
        );
        let _ = writeln!(out, "interval: {step_s}s");
        out.push_str("input_series:\n");
        for series in self.series.values() {
            for ((sample, labels), points) in series {
                let mut values: Vec<Option<f64>> = vec![None; self.steps.len()];
                for (step, v) in points {
                    values[*step] = Some(*v);
                }
                let _ = writeln!(out, "  - series: '{sample}{labels}'");
                let _ = writeln!(out, "    values: '{}'", compress(&values));
            }
        }
        out
    }
}

/// promtool's expanding notation for a run of values: `a+bxn` is a, a+b,
/// ..., a+nb; `_` a missing sample. Runs are taken only over whole numbers,
/// whose sums are exact.
pub fn compress(values: &[Option<f64>]) -> String {
    let whole = |v: f64| v.is_finite() && v.fract() == 0.0 && v.abs() < 9e15;
    let mut parts = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let Some(a) = values[i] else {
            let mut n = 1;
            while values.get(i + n).is_some_and(Option::is_none) {
                n += 1;
            }
            parts.push(if n == 1 {
                "_".to_owned()
            } else {
                format!("_x{n}")
            });
            i += n;
            continue;
        };
        if whole(a)
            && let Some(Some(b)) = values.get(i + 1)
            && whole(*b)
        {
            let d = b - a;
            let mut n = 1;
            while let Some(Some(next)) = values.get(i + n + 1) {
                if whole(*next) && *next - values[i + n].unwrap_or(f64::NAN) == d {
                    n += 1;
                } else {
                    break;
                }
            }
            if n >= 2 {
                let sign = if d < 0.0 { '-' } else { '+' };
                parts.push(format!("{}{sign}{}x{n}", number(a), number(d.abs())));
                i += n + 1;
                continue;
            }
        }
        parts.push(number(a));
        i += 1;
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{label, reference_families};

    #[test]
    fn runs_of_a_constant_increase_are_compressed() {
        let v = |xs: &[f64]| xs.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        assert_eq!(compress(&v(&[0.0, 10.0, 20.0, 30.0])), "0+10x3");
        assert_eq!(compress(&v(&[5.0, 5.0, 5.0, 7.0])), "5+0x2 7");
        assert_eq!(compress(&v(&[3.0, 1.0])), "3 1");
        assert_eq!(compress(&v(&[9.0, 6.0, 3.0, 0.0])), "9-3x3");
        assert_eq!(compress(&v(&[0.5, 1.0, 1.5])), "0.5 1 1.5");
        assert_eq!(compress(&v(&[f64::NAN, 1.0])), "NaN 1");
        assert_eq!(compress(&[None, None, Some(1.0), Some(2.0)]), "_x2 1 2");
    }

    #[test]
    fn openmetrics_groups_families_and_names_counters_without_total() {
        let mut r = Recorder::default();
        let families = reference_families();
        r.record(1_700_000_000_000_000_000, &families);
        r.record(1_700_000_015_500_000_000, &families);
        let text = r.openmetrics();
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE tcp_handshake_attempts counter\n"));
        assert!(text.contains(
            "tcp_handshake_attempts_total{direction=\"inbound\",family=\"ipv4\",iface=\"eth0\",instance=\"replay\",job=\"handshake-monitor\"} 0 1700000015.500\n"
        ));
        assert!(text.contains("# TYPE tcp_handshake_synack_latency_seconds histogram\n"));
        assert!(
            text.contains("up{instance=\"replay\",job=\"handshake-monitor\"} 1 1700000000.000\n")
        );
        // Each family's TYPE once.
        assert_eq!(
            text.matches("# TYPE tcp_handshake_attempts counter")
                .count(),
            1
        );
        let _ = label("a", "b");
    }
}

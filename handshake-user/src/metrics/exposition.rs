//! Turns the summed kernel counters into Prometheus metric families.
//!
//! Which kernel counter feeds which series is written once, in [`CATALOG`],
//! so the metric contract can be read (and tested) in one place.
use handshake_common::{
    counters::{COUNTERS_LEN, Counter, Direction, Family, OTHER_IFACE_SLOT, counter_index},
    histogram::{BUCKETS, FINITE_BUCKETS, Leg, base_index, sum_index, upper_bound_seconds},
};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

pub use super::{
    catalog::{CATALOG, OTHER_IFACE, Scope, Series, help},
    reference::{MetricInfo, reference, reference_families, reference_markdown},
};

pub fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn family_of(name: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help(name).to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn counter_metric(labels: Vec<LabelPair>, value: u64) -> proto::Metric {
    let mut counter = proto::Counter::default();
    counter.set_value(value as f64);
    let mut metric = proto::Metric::from_label(labels);
    metric.set_counter(counter);
    metric
}

/// Slot 0 as `iface="other"` when `other` (or `ifaces` names it), then
/// every interface slot in `ifaces`. Slot 0 holds interfaces without a
/// slot of their own (past the 63rd): most hosts never use it, and its
/// series would only ever read 0.
fn labelled_slots(ifaces: &[(u32, String)], other: bool) -> Vec<(u32, &str)> {
    let mut slots = Vec::new();
    if other || ifaces.iter().any(|(s, _)| *s == OTHER_IFACE_SLOT) {
        slots.push((OTHER_IFACE_SLOT, OTHER_IFACE));
    }
    slots.extend(
        ifaces
            .iter()
            .filter(|(s, _)| *s != OTHER_IFACE_SLOT)
            .map(|(s, n)| (*s, n.as_str())),
    );
    slots
}

/// Counter families from the summed `COUNTERS` array, one series set per
/// interface slot in `ifaces` (slot, name); slot 0, as `iface="other"`,
/// when an interface counts there or it has counted anything.
pub fn counter_families(counters: &[u64], ifaces: &[(u32, String)]) -> Vec<MetricFamily> {
    debug_assert_eq!(counters.len(), COUNTERS_LEN as usize);
    let value = |s: u32, f: Family, d: Direction, c: Counter| {
        counters
            .get(counter_index(s, f, d, c) as usize)
            .copied()
            .unwrap_or(0)
    };
    let first = counter_index(
        OTHER_IFACE_SLOT,
        Family::Ipv4,
        Direction::Inbound,
        Counter::ALL[0],
    );
    let other = counters
        .iter()
        .skip(first as usize)
        .take(handshake_common::counters::COUNTERS_PER_IFACE as usize)
        .any(|v| *v != 0);
    let slots = labelled_slots(ifaces, other);
    let mut families: Vec<MetricFamily> = Vec::new();
    for series in CATALOG {
        let mut metrics = Vec::new();
        for (slot, iface) in &slots {
            for direction in Direction::ALL {
                let extra = series.label.map(|(n, v)| label(n, v));
                match series.scope {
                    Scope::Flow => {
                        for family in Family::ALL {
                            let mut labels = vec![
                                label("direction", direction.label()),
                                label("family", family.label()),
                                label("iface", iface),
                            ];
                            labels.extend(extra.clone());
                            metrics.push(counter_metric(
                                labels,
                                value(*slot, family, direction, series.counter),
                            ));
                        }
                    }
                    Scope::Hook => {
                        let hook = if direction == Direction::Inbound {
                            "ingress"
                        } else {
                            "egress"
                        };
                        let total: u64 = Family::ALL
                            .iter()
                            .map(|f| value(*slot, *f, direction, series.counter))
                            .sum();
                        let mut labels = vec![label("hook", hook), label("iface", iface)];
                        labels.extend(extra);
                        metrics.push(counter_metric(labels, total));
                    }
                }
            }
        }
        match families.iter_mut().find(|f| f.name() == series.metric) {
            Some(existing) => {
                let mut all = existing.take_metric();
                all.extend(metrics);
                existing.set_metric(all);
            }
            None => families.push(family_of(series.metric, MetricType::COUNTER, metrics)),
        }
    }
    families
}

/// Latency histograms from the summed `LATENCY` array, made cumulative.
pub fn latency_families(latency: &[u64]) -> Vec<MetricFamily> {
    let at = |i: u32| latency.get(i as usize).copied().unwrap_or(0);
    let legs = [
        (Leg::SynToSynAck, "tcp_handshake_synack_latency_seconds"),
        (Leg::SynAckToAck, "tcp_handshake_ack_latency_seconds"),
    ];
    legs.iter()
        .map(|(leg, name)| {
            let metrics = Direction::ALL
                .iter()
                .map(|direction| {
                    let base = base_index(*direction, *leg);
                    let mut cumulative = 0u64;
                    let buckets = (0..FINITE_BUCKETS)
                        .map(|b| {
                            cumulative += at(base + b);
                            let mut bucket = proto::Bucket::default();
                            bucket.set_upper_bound(upper_bound_seconds(b));
                            bucket.set_cumulative_count(cumulative);
                            bucket
                        })
                        .collect();
                    let count = cumulative + at(base + BUCKETS - 1);
                    let mut histogram = proto::Histogram::default();
                    histogram.set_bucket(buckets);
                    histogram.set_sample_count(count);
                    histogram.set_sample_sum(at(sum_index(*direction, *leg)) as f64 * 1e-9);
                    let mut metric =
                        proto::Metric::from_label(vec![label("direction", direction.label())]);
                    metric.set_histogram(histogram);
                    metric
                })
                .collect();
            family_of(name, MetricType::HISTOGRAM, metrics)
        })
        .collect()
}

fn gauge_metric(labels: Vec<LabelPair>, value: f64) -> proto::Metric {
    let mut gauge = proto::Gauge::default();
    gauge.set_value(value);
    let mut metric = proto::Metric::from_label(labels);
    metric.set_gauge(gauge);
    metric
}

/// Gauges from the last flow-table scan, ratios included. `ifaces` as for
/// [`counter_families`].
pub fn scan_families(snap: &crate::scan::Snapshot, ifaces: &[(u32, String)]) -> Vec<MetricFamily> {
    use handshake_common::flow::Stage;
    let other = snap
        .half_open
        .keys()
        .any(|(slot, ..)| *slot == OTHER_IFACE_SLOT);
    let slots = labelled_slots(ifaces, other);
    let mut half_open = Vec::new();
    let mut completion = Vec::new();
    let mut synack = Vec::new();
    for (slot, iface) in &slots {
        for direction in Direction::ALL {
            for family in Family::ALL {
                let base = || {
                    vec![
                        label("direction", direction.label()),
                        label("family", family.label()),
                        label("iface", iface),
                    ]
                };
                for stage in [Stage::SynSent, Stage::SynReceived] {
                    let n = snap
                        .half_open
                        .get(&(*slot, family as u8, direction as u8, stage as u8))
                        .copied()
                        .unwrap_or(0);
                    let mut labels = base();
                    labels.push(label("stage", stage.label()));
                    half_open.push(gauge_metric(labels, n as f64));
                }
                let (c, s) = snap
                    .ratios
                    .get(&(*slot, family as u8, direction as u8))
                    .copied()
                    .unwrap_or((f64::NAN, f64::NAN));
                completion.push(gauge_metric(base(), c));
                synack.push(gauge_metric(base(), s));
            }
        }
    }
    let oldest = [Stage::SynSent, Stage::SynReceived]
        .iter()
        .map(|st| {
            gauge_metric(
                vec![label("stage", st.label())],
                snap.oldest_seconds[crate::scan::stage_index(*st as u8)],
            )
        })
        .collect();
    vec![
        family_of("tcp_handshake_half_open", MetricType::GAUGE, half_open),
        family_of(
            "tcp_handshake_half_open_oldest_seconds",
            MetricType::GAUGE,
            oldest,
        ),
        family_of(
            "tcp_handshake_completion_ratio",
            MetricType::GAUGE,
            completion,
        ),
        family_of("tcp_handshake_synack_ratio", MetricType::GAUGE, synack),
        family_of(
            "tcp_handshake_flow_table_entries",
            MetricType::GAUGE,
            vec![
                gauge_metric(
                    vec![label("state", "live")],
                    snap.entries.saturating_sub(snap.tombstones) as f64,
                ),
                gauge_metric(vec![label("state", "tombstone")], snap.tombstones as f64),
            ],
        ),
        family_of(
            "tcp_handshake_flow_table_capacity",
            MetricType::GAUGE,
            vec![gauge_metric(vec![], f64::from(snap.capacity))],
        ),
        family_of(
            "tcp_handshake_scan_duration_seconds",
            MetricType::GAUGE,
            vec![gauge_metric(vec![], snap.scan_seconds)],
        ),
    ]
}

/// Per-listener funnels (counters) and half-open gauges; port 0 is "other".
pub fn listener_families(
    listeners: &[(u16, handshake_common::listener::ListenerCounters)],
    snap: &crate::scan::Snapshot,
) -> Vec<MetricFamily> {
    let port_label = |p: u16| {
        if p == 0 {
            "other".to_owned()
        } else {
            p.to_string()
        }
    };
    let series = |name: &str, get: fn(&handshake_common::listener::ListenerCounters) -> u64| {
        let metrics = listeners
            .iter()
            .map(|(p, c)| counter_metric(vec![label("port", &port_label(*p))], get(c)))
            .collect();
        family_of(name, MetricType::COUNTER, metrics)
    };
    let half_open = listeners
        .iter()
        .map(|(p, _)| {
            gauge_metric(
                vec![label("port", &port_label(*p))],
                snap.listener_half_open.get(p).copied().unwrap_or(0) as f64,
            )
        })
        .collect();
    // Accept queues: tracked ports with a listener now (not "other").
    let queue = |get: fn(&crate::sockdiag::AcceptQueue) -> u64| {
        snap.accept_queues
            .iter()
            .filter(|(p, _)| listeners.iter().any(|(l, _)| l == *p && **p != 0))
            .map(|(p, q)| gauge_metric(vec![label("port", &port_label(*p))], get(q) as f64))
            .collect()
    };
    vec![
        family_of(
            "tcp_handshake_listener_accept_queue",
            MetricType::GAUGE,
            queue(|q| q.queued),
        ),
        family_of(
            "tcp_handshake_listener_accept_queue_limit",
            MetricType::GAUGE,
            queue(|q| q.limit),
        ),
        series("tcp_handshake_listener_attempts_total", |c| c.attempts),
        series("tcp_handshake_listener_synack_total", |c| c.synack),
        series("tcp_handshake_listener_completed_total", |c| c.completed),
        series("tcp_handshake_listener_rejected_total", |c| c.rejected),
        series("tcp_handshake_listener_aborted_total", |c| c.aborted),
        family_of(
            "tcp_handshake_listener_half_open",
            MetricType::GAUGE,
            half_open,
        ),
    ]
}

/// The kernel's TcpExt counters (absent fields are left out).
pub fn netstat_families(values: &[Option<u64>]) -> Vec<MetricFamily> {
    crate::netstat::FIELDS
        .iter()
        .zip(values)
        .filter_map(|((_, name, help), v)| {
            let mut f = family_of(
                name,
                MetricType::COUNTER,
                vec![counter_metric(vec![], (*v)?)],
            );
            f.set_help((*help).to_owned());
            Some(f)
        })
        .collect()
}

pub fn detector_family(firing: &[(&str, bool)]) -> MetricFamily {
    let metrics = firing
        .iter()
        .map(|(c, f)| gauge_metric(vec![label("condition", c)], if *f { 1.0 } else { 0.0 }))
        .collect();
    family_of("tcp_handshake_detector_firing", MetricType::GAUGE, metrics)
}

pub fn build_info() -> MetricFamily {
    let mut gauge = proto::Gauge::default();
    gauge.set_value(1.0);
    let mut metric = proto::Metric::from_label(vec![label("version", env!("CARGO_PKG_VERSION"))]);
    metric.set_gauge(gauge);
    family_of(
        "handshake_monitor_build_info",
        MetricType::GAUGE,
        vec![metric],
    )
}

/// The text exposition of `families`.
/// The text exposition. Families without a series (accept queues when no
/// tracked port has a listener) are left out: the encoder refuses them.
pub fn encode(families: &[MetricFamily]) -> anyhow::Result<String> {
    use prometheus::Encoder as _;
    let present: Vec<MetricFamily> = families
        .iter()
        .filter(|f| !f.get_metric().is_empty())
        .cloned()
        .collect();
    let mut out = Vec::new();
    prometheus::TextEncoder::new().encode(&present, &mut out)?;
    Ok(String::from_utf8(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_counter_is_exported_once() {
        for c in Counter::ALL {
            let n = CATALOG.iter().filter(|s| s.counter == *c).count();
            assert_eq!(n, 1, "{c:?} appears {n} times in the catalog");
        }
    }

    #[test]
    fn every_metric_has_help() {
        for s in CATALOG {
            assert!(!help(s.metric).is_empty(), "{} has no HELP", s.metric);
        }
    }

    #[test]
    fn counters_land_in_their_series() {
        let mut counters = vec![0u64; COUNTERS_LEN as usize];
        counters
            [counter_index(3, Family::Ipv6, Direction::Outbound, Counter::Completed) as usize] = 7;
        counters[counter_index(3, Family::Ipv4, Direction::Inbound, Counter::Packets) as usize] = 3;
        counters[counter_index(3, Family::Ipv6, Direction::Inbound, Counter::Packets) as usize] = 4;
        counters[counter_index(0, Family::Ipv4, Direction::Inbound, Counter::Completed) as usize] =
            1;
        // Slot 9 is not exported: no interface has it.
        counters[counter_index(9, Family::Ipv4, Direction::Inbound, Counter::Completed) as usize] =
            5;
        let text = encode(&counter_families(&counters, &[(3, "eth0".to_owned())])).expect("encode");
        assert!(text.contains("tcp_handshake_completed_total{direction=\"outbound\",family=\"ipv6\",iface=\"eth0\"} 7\n"), "{text}");
        assert!(text.contains("tcp_handshake_completed_total{direction=\"inbound\",family=\"ipv4\",iface=\"eth0\"} 0\n"));
        assert!(text.contains("tcp_handshake_completed_total{direction=\"inbound\",family=\"ipv4\",iface=\"other\"} 1\n"));
        assert!(
            text.contains("tcp_handshake_packets_total{hook=\"ingress\",iface=\"eth0\"} 7\n"),
            "{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("tcp_handshake_completed_total"))
                .count(),
            8
        );
    }

    #[test]
    fn histograms_are_cumulative() {
        let mut latency = vec![0u64; handshake_common::histogram::LATENCY_LEN as usize];
        let base = base_index(Direction::Inbound, Leg::SynToSynAck) as usize;
        latency[base] = 1; // <= 1 µs
        latency[base + 3] = 2; // <= 8 µs
        latency[base + BUCKETS as usize - 1] = 1; // overflow
        latency[sum_index(Direction::Inbound, Leg::SynToSynAck) as usize] = 2_000_000_000;
        let text = encode(&latency_families(&latency)).expect("encode");
        assert!(text.contains("tcp_handshake_synack_latency_seconds_bucket{direction=\"inbound\",le=\"0.000001\"} 1\n"), "{text}");
        assert!(text.contains(
            "tcp_handshake_synack_latency_seconds_bucket{direction=\"inbound\",le=\"0.000008\"} 3\n"
        ));
        assert!(text.contains(
            "tcp_handshake_synack_latency_seconds_bucket{direction=\"inbound\",le=\"+Inf\"} 4\n"
        ));
        assert!(
            text.contains("tcp_handshake_synack_latency_seconds_sum{direction=\"inbound\"} 2\n")
        );
        assert!(
            text.contains("tcp_handshake_synack_latency_seconds_count{direction=\"inbound\"} 4\n")
        );
    }
}

//! Turns the summed kernel counters into Prometheus metric families.
//!
//! Which kernel counter feeds which series is written once, in [`CATALOG`],
//! so the metric contract can be read (and tested) in one place.
use handshake_common::{
    counters::{COUNTERS_LEN, Counter, Direction, Family, OTHER_IFACE_SLOT, counter_index},
    histogram::{BUCKETS, FINITE_BUCKETS, Leg, base_index, sum_index, upper_bound_seconds},
};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

/// How a kernel counter's (family, direction) slots are labelled. Both
/// scopes also carry `iface`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A flow counter: labels `family` and `direction`.
    Flow,
    /// Counted before the flow is known: label `hook` (ingress|egress), the
    /// family and direction slots summed.
    Hook,
}

/// The label of interface slot 0: every interface without a slot of its own.
pub const OTHER_IFACE: &str = "other";

/// One series of the contract: a kernel counter, the metric it feeds, and
/// the extra label that tells it apart from its siblings.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    pub counter: Counter,
    pub metric: &'static str,
    pub label: Option<(&'static str, &'static str)>,
    pub scope: Scope,
}

const fn flow(
    counter: Counter,
    metric: &'static str,
    label: Option<(&'static str, &'static str)>,
) -> Series {
    Series {
        counter,
        metric,
        label,
        scope: Scope::Flow,
    }
}

const fn hook(
    counter: Counter,
    metric: &'static str,
    label: Option<(&'static str, &'static str)>,
) -> Series {
    Series {
        counter,
        metric,
        label,
        scope: Scope::Hook,
    }
}

/// Every counter series the agent exports.
pub const CATALOG: &[Series] = &[
    hook(Counter::Packets, "tcp_handshake_packets_total", None),
    flow(Counter::SynPackets, "tcp_handshake_syn_packets_total", None),
    flow(Counter::Attempts, "tcp_handshake_attempts_total", None),
    flow(Counter::SynAck, "tcp_handshake_synack_total", None),
    flow(Counter::Completed, "tcp_handshake_completed_total", None),
    flow(Counter::Rejected, "tcp_handshake_rejected_total", None),
    flow(Counter::Aborted, "tcp_handshake_aborted_total", None),
    flow(
        Counter::RetransmitSyn,
        "tcp_handshake_retransmits_total",
        Some(("segment", "syn")),
    ),
    flow(
        Counter::RetransmitSynAck,
        "tcp_handshake_retransmits_total",
        Some(("segment", "synack")),
    ),
    flow(
        Counter::InvalidSynAckAck,
        "tcp_handshake_invalid_total",
        Some(("reason", "synack_bad_ack")),
    ),
    flow(
        Counter::InvalidSynAckSeq,
        "tcp_handshake_invalid_total",
        Some(("reason", "synack_changed_isn")),
    ),
    flow(
        Counter::InvalidAckSeq,
        "tcp_handshake_invalid_total",
        Some(("reason", "ack_bad_seq")),
    ),
    flow(
        Counter::InvalidAckAck,
        "tcp_handshake_invalid_total",
        Some(("reason", "ack_bad_ack")),
    ),
    flow(
        Counter::InvalidRst,
        "tcp_handshake_invalid_total",
        Some(("reason", "rst_out_of_window")),
    ),
    flow(
        Counter::Unsolicited,
        "tcp_handshake_invalid_total",
        Some(("reason", "unsolicited_synack")),
    ),
    flow(
        Counter::SynUntracked,
        "tcp_handshake_syn_untracked_total",
        Some(("reason", "insert_budget")),
    ),
    flow(
        Counter::SynInsertFailed,
        "tcp_handshake_syn_untracked_total",
        Some(("reason", "insert_failed")),
    ),
    flow(
        Counter::TimeoutSynSent,
        "tcp_handshake_timeouts_total",
        Some(("stage", "syn_sent")),
    ),
    flow(
        Counter::TimeoutSynReceived,
        "tcp_handshake_timeouts_total",
        Some(("stage", "syn_received")),
    ),
    flow(
        Counter::LateSegment,
        "tcp_handshake_late_segments_total",
        None,
    ),
    flow(
        Counter::SupersededSynSent,
        "tcp_handshake_superseded_total",
        Some(("stage", "syn_sent")),
    ),
    flow(
        Counter::SupersededSynReceived,
        "tcp_handshake_superseded_total",
        Some(("stage", "syn_received")),
    ),
    flow(
        Counter::EvictedSynSent,
        "tcp_handshake_evicted_total",
        Some(("stage", "syn_sent")),
    ),
    flow(
        Counter::EvictedSynReceived,
        "tcp_handshake_evicted_total",
        Some(("stage", "syn_received")),
    ),
    flow(
        Counter::DuplicateObservation,
        "tcp_handshake_duplicate_observations_total",
        None,
    ),
    hook(Counter::Fragments, "tcp_handshake_fragments_total", None),
    hook(
        Counter::ParseEthTruncated,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "eth_truncated")),
    ),
    hook(
        Counter::ParseVlanTruncated,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "vlan_truncated")),
    ),
    hook(
        Counter::ParseTooManyVlans,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "too_many_vlans")),
    ),
    hook(
        Counter::ParseIpv4Truncated,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "ipv4_truncated")),
    ),
    hook(
        Counter::ParseIpv4BadHeaderLength,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "ipv4_bad_header_length")),
    ),
    hook(
        Counter::ParseIpv6Truncated,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "ipv6_truncated")),
    ),
    hook(
        Counter::ParseIpv6ExtTruncated,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "ipv6_ext_truncated")),
    ),
    hook(
        Counter::ParseIpv6ExtChainTooLong,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "ipv6_ext_chain_too_long")),
    ),
    hook(
        Counter::ParseTcpTruncated,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "tcp_truncated")),
    ),
    hook(
        Counter::ParseTcpBadDataOffset,
        "tcp_handshake_parse_errors_total",
        Some(("reason", "tcp_bad_data_offset")),
    ),
];

/// HELP text of each metric.
pub fn help(metric: &str) -> &'static str {
    match metric {
        "tcp_handshake_packets_total" => {
            "Frames the programs looked at, by hook (ingress: XDP or TC ingress; egress: TC)."
        }
        "tcp_handshake_syn_packets_total" => {
            "TCP segments with SYN set and ACK clear, retransmissions included."
        }
        "tcp_handshake_attempts_total" => {
            "New handshake attempts: a SYN with no tracked handshake, or with a new ISN."
        }
        "tcp_handshake_synack_total" => {
            "SYN-ACKs whose ack was the client ISN + 1 (first one per attempt)."
        }
        "tcp_handshake_completed_total" => {
            "Handshakes completed by an ACK with seq = client ISN + 1 and ack = server ISN + 1."
        }
        "tcp_handshake_rejected_total" => "SYNs answered by a RST (closed port, refused).",
        "tcp_handshake_aborted_total" => {
            "Handshakes reset by either side after the SYN, before completion."
        }
        "tcp_handshake_retransmits_total" => {
            "Retransmitted SYNs and SYN-ACKs (same ISN), not counted as attempts."
        }
        "tcp_handshake_invalid_total" => {
            "Handshake segments that failed validation; the flow state was left unchanged."
        }
        "tcp_handshake_syn_untracked_total" => {
            "New attempts counted but not tracked (flood insert budget spent, or every way of the flow's table bucket being written at that instant)."
        }
        "tcp_handshake_timeouts_total" => {
            "Handshakes that waited longer than --handshake-timeout, by the stage they were stuck in."
        }
        "tcp_handshake_late_segments_total" => {
            "Handshake segments (SYN, SYN-ACK, RST) of attempts already counted as timeouts: the peers retrying after we gave up."
        }
        "tcp_handshake_superseded_total" => {
            "Tracked attempts replaced by a SYN with a new ISN on the same 5-tuple (port reuse)."
        }
        "tcp_handshake_evicted_total" => {
            "Handshakes in progress pushed out of a full flow-table bucket by a new attempt, by stage; no longer tracked, never counted as completed or timed out."
        }
        "tcp_handshake_duplicate_observations_total" => {
            "Handshake segments seen a second time at another hook on this host."
        }
        "tcp_handshake_fragments_total" => "Non-first IP fragments (no TCP header to read).",
        "tcp_handshake_parse_errors_total" => {
            "Frames with short or garbled headers, by the header that failed."
        }
        "tcp_handshake_synack_latency_seconds" => "Time from the SYN to the first valid SYN-ACK.",
        "tcp_handshake_ack_latency_seconds" => {
            "Time from the first valid SYN-ACK to the completing ACK."
        }
        "handshake_monitor_build_info" => "Build of the running agent; value is always 1.",
        "tcp_handshake_half_open" => {
            "Handshakes in progress (not completed, not yet timed out), by stage, at the last scan."
        }
        "tcp_handshake_half_open_oldest_seconds" => {
            "Age of the oldest handshake in progress, by stage, at the last scan."
        }
        "tcp_handshake_completion_ratio" => {
            "Completed / attempts over --ratio-window (NaN: no attempts in the window)."
        }
        "tcp_handshake_synack_ratio" => {
            "SYN-ACKs / attempts over --ratio-window (NaN: no attempts in the window)."
        }
        "tcp_handshake_flow_table_entries" => {
            "Entries in the flow table at the last scan, by state: live (handshakes in progress) and tombstone (timed out, kept a while to recognise late retransmissions; reused first when a bucket is full)."
        }
        "tcp_handshake_flow_table_capacity" => {
            "Capacity of the flow table (4-way buckets); from about half of it, some buckets overflow and new handshakes evict old ones (tcp_handshake_evicted_total), and ratios become untrustworthy."
        }
        "tcp_handshake_listener_attempts_total" => {
            "Inbound handshake attempts per local server port (port=\"other\": untracked ports)."
        }
        "tcp_handshake_listener_synack_total" => "Valid SYN-ACKs per local server port.",
        "tcp_handshake_listener_completed_total" => {
            "Completed inbound handshakes per local server port."
        }
        "tcp_handshake_listener_rejected_total" => {
            "Inbound SYNs refused with a RST per local server port."
        }
        "tcp_handshake_listener_aborted_total" => {
            "Inbound handshakes reset after the SYN per local server port."
        }
        "tcp_handshake_listener_half_open" => {
            "Inbound handshakes in progress per local server port, at the last scan."
        }
        "tcp_handshake_detector_firing" => "1 while the built-in detector's condition is firing.",
        "tcp_handshake_scan_duration_seconds" => "Time the last flow-table scan took.",
        _ => "",
    }
}

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
    vec![
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
pub fn encode(families: &[MetricFamily]) -> anyhow::Result<String> {
    use prometheus::Encoder as _;
    let mut out = Vec::new();
    prometheus::TextEncoder::new().encode(families, &mut out)?;
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

/// One metric of the contract, for the reference documentation and the
/// checks that dashboards and rules only name metrics that exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    pub name: String,
    pub kind: &'static str,
    pub help: String,
    pub labels: Vec<String>,
}

/// A render of every family the scrape handler serves, all zero.
pub fn reference_families() -> Vec<MetricFamily> {
    use handshake_common::{
        counters::COUNTERS_LEN, histogram::LATENCY_LEN, listener::ListenerCounters,
    };
    let ifaces = [(1, "eth0".to_owned())];
    let mut families = counter_families(&vec![0; COUNTERS_LEN as usize], &ifaces);
    families.extend(latency_families(&vec![0; LATENCY_LEN as usize]));
    families.extend(scan_families(&crate::scan::Snapshot::default(), &ifaces));
    families.extend(listener_families(
        &[
            (0, ListenerCounters::default()),
            (80, ListenerCounters::default()),
        ],
        &crate::scan::Snapshot::default(),
    ));
    families.extend(netstat_families(&vec![
        Some(0);
        crate::netstat::FIELDS.len()
    ]));
    families.push(detector_family(&[("half_open_buildup", false)]));
    families.push(build_info());
    families
}

/// Every metric family the agent serves, with its labels, from a render of
/// the same functions the scrape handler calls.
pub fn reference() -> Vec<MetricInfo> {
    reference_families()
        .iter()
        .map(|f| {
            let mut labels: Vec<String> = f
                .get_metric()
                .iter()
                .flat_map(|m| m.get_label().iter().map(|l| l.name().to_owned()))
                .collect();
            labels.sort();
            labels.dedup();
            let kind = match f.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                _ => "untyped",
            };
            MetricInfo {
                name: f.name().to_owned(),
                kind,
                help: f.help().to_owned(),
                labels,
            }
        })
        .collect()
}

/// The metric reference as a Markdown table (the README embeds it).
pub fn reference_markdown() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n");
    for m in reference() {
        let labels = if m.labels.is_empty() {
            "".to_owned()
        } else {
            m.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {labels} | {} |\n",
            m.name,
            m.kind,
            m.help.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod reference_tests {
    use super::*;

    const BEGIN: &str = "<!-- metric-reference:begin (generated by `UPDATE_README=1 cargo test -p handshake-user`) -->\n";
    const END: &str = "<!-- metric-reference:end -->";

    /// The README's metric reference is generated from the code; this fails
    /// when they drift. `UPDATE_README=1 cargo test -p handshake-user`
    /// rewrites it.
    #[test]
    fn readme_metric_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
            panic!("README.md lacks the metric-reference markers");
        };
        let current = &readme[b + BEGIN.len()..e];
        let generated = reference_markdown();
        if current != generated {
            if std::env::var_os("UPDATE_README").is_some() {
                let updated = format!("{}{BEGIN}{generated}{}", &readme[..b], &readme[e..]);
                std::fs::write(path, updated).expect("write README.md");
            } else {
                panic!(
                    "README.md's metric reference is out of date: run `UPDATE_README=1 cargo test -p handshake-user`"
                );
            }
        }
    }

    #[test]
    fn every_family_has_help_and_a_type() {
        for m in reference() {
            assert!(!m.help.is_empty(), "{} has no HELP", m.name);
            assert_ne!(m.kind, "untyped", "{}", m.name);
        }
    }
}

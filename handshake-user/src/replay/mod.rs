//! `handshake-monitor replay FILE`: every packet of a capture, in order,
//! through the same kernel programs that run live (BPF_PROG_TEST_RUN), with
//! the capture's timestamps as their clock. Packets a cooked or pcapng
//! capture marks as sent by the host go through the egress program, the
//! rest through the ingress one (tap mode).
//!
//! Timeouts follow the live agent: every second of capture time the same
//! scan runs (handshakes older than --handshake-timeout are expired), the
//! built-in detector is evaluated on capture time, and, for the series
//! formats, every metric is sampled each --step. At the end of the capture,
//! handshakes still open are reported as timeouts by the stage they reached.

pub mod explain;
pub mod pcap;
mod reorder;
mod runner;
use reorder::{Numbered, Reorder};
use runner::Runner;
use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use handshake_common::{
    counters::{COUNTERS_LEN, Counter, Direction, Family, counter_index},
    histogram::{BUCKETS, FINITE_BUCKETS, Leg, base_index, sum_index, upper_bound_seconds},
    listener::ListenerCounters,
    parse::{Parsed, TCP_ACK, TCP_SYN, parse_ethernet},
};

use crate::{
    cli::{ReplayArgs, ReplayFormat},
    detector::{Detector, report as detector_line},
    exposition,
    pcap::{LinkType, Reader, Way},
    probe::{LoadOptions, Probe},
    scan::{Summarizer, summarize},
    series::Recorder,
    signals::{ratios_by_series, signals},
    window::CounterWindow,
};

/// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
const MIN_FRAME: usize = 14;
/// Longer frames are handed to the programs cut to this: they read only
/// headers, and take payload lengths from the IP header, not the frame;
/// test runs refuse frames much past a page (a GSO frame of `tcpdump -i
/// any` can be 64 KiB and more).
const MAX_RUN_FRAME: usize = 2048;
/// The interface slot replayed packets are counted in, labelled "capture".
const CAPTURE_SLOT: u32 = 1;
/// Capture time between two expiry scans, as the live agent's default.
const SCAN_EVERY_NS: u64 = 1_000_000_000;
/// Scans run across a gap in the capture at most; past it the scan jumps
/// (a handshake's whole life, timeout and tombstone, is shorter).
const MAX_SCANS_PER_GAP: u64 = 1000;
/// The ratio window's length in replay, as the live default.
const RATIO_WINDOW: Duration = Duration::from_secs(60);
/// Most listener ports picked from the capture itself.
const MAX_LISTENERS_FROM_CAPTURE: usize = 64;

/// What a replay found.
pub struct Report {
    pub file: String,
    pub link: Option<&'static str>,
    pub frames: u64,
    /// Frames shorter than an Ethernet header: not run.
    pub too_short: u64,
    /// Frames of a link type we do not read (a pcapng interface of another
    /// kind): skipped.
    pub other_link: u64,
    /// Frames longer than `MAX_RUN_FRAME`, run on their headers.
    pub cut: u64,
    /// Frames the kernel would not run, and the first such (frame number,
    /// error).
    pub not_run: u64,
    pub first_not_run: Option<(u64, String)>,
    /// Timestamps whose fraction was out of range, clamped.
    pub clamped_timestamps: u64,
    /// SYN-ACKs captured before their SYN, run after it.
    pub reordered: u64,
    /// gzip or zstd, when the capture was compressed.
    pub compression: Option<&'static str>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub counters: Vec<u64>,
    pub latency: Vec<u64>,
    pub listeners: Vec<(u16, ListenerCounters)>,
    /// Set when the capture could not be read to its end.
    pub error: Option<String>,
    /// The detector's transitions: (capture time in ns, its log line).
    pub detector: Vec<(u64, String)>,
    /// Every metric each --step, for the series formats.
    pub series: Recorder,
}

/// Ports that received SYNs, most first: the listeners of a capture.
fn listeners_in(path: &Path) -> Result<Vec<u16>> {
    let mut reader = Reader::open(path).map_err(anyhow::Error::new)?;
    let mut syns: BTreeMap<u16, u64> = BTreeMap::new();
    while let Ok(Some(p)) = reader.next_packet() {
        if let Ok(Parsed::Tcp(seg)) = parse_ethernet(&p.frame[..])
            && seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN
            && p.way != Some(Way::Outgoing)
        {
            *syns.entry(seg.dst_port).or_default() += 1;
        }
    }
    let mut ports: Vec<(u16, u64)> = syns.into_iter().collect();
    ports.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(ports
        .into_iter()
        .take(MAX_LISTENERS_FROM_CAPTURE)
        .map(|(p, _)| p)
        .collect())
}

fn lo_ifindex() -> u32 {
    std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
}

/// Expires handshakes older than `timeout` at capture time `now_ns`, and
/// forgets old tombstones, as the live agent's scan does; with `timeout`
/// None, expires every handshake still in progress (the end of a capture).
fn expire(probe: &mut Probe, now_ns: u64, timeout: Option<Duration>) -> Result<()> {
    let flows = probe.flows()?;
    let chores = match timeout {
        Some(t) => summarize(&flows, now_ns, t, &[]).1,
        None => crate::scan::Chores {
            expire: flows
                .iter()
                .filter(|(_, s)| !s.is_tombstone())
                .map(|(k, s)| (*k, s.syn_ns))
                .collect(),
            forget: Vec::new(),
            release: Vec::new(),
        },
    };
    for (key, syn_ns) in chores.expire {
        probe.expire(&key, syn_ns)?;
    }
    for (key, syn_ns) in chores.forget {
        probe.forget(&key, syn_ns)?;
    }
    Ok(())
}

/// What the live agent's scanner thread does, on capture time.
struct Ticker {
    timeout: Duration,
    window: CounterWindow,
    detector: Detector,
    /// Sample series every this many ns (None: not asked for).
    step_ns: Option<u64>,
    next_step_ns: u64,
}

impl Ticker {
    /// One scan at capture time `now_ns`: expiry, the windows, the detector,
    /// and a sample of every metric when a step is due.
    fn tick(&mut self, probe: &mut Probe, now_ns: u64, report: &mut Report) -> Result<()> {
        let tracked = probe.listener_ports();
        let young = self.detector.thresholds().window;
        let mut summary = Summarizer::new(now_ns, self.timeout, young, &tracked);
        for (k, st) in probe.flows()? {
            summary.add(&k, &st);
        }
        let (mut snap, chores) = summary.finish();
        for (key, syn_ns) in &chores.expire {
            if probe.expire(key, *syn_ns)? {
                snap.expired += 1;
                snap.tombstones += 1;
            }
        }
        for (key, syn_ns) in &chores.forget {
            if probe.forget(key, *syn_ns)? {
                snap.entries -= 1;
                snap.tombstones -= 1;
            }
        }
        snap.capacity = probe.flow_reader()?.capacity();
        self.window
            .push(now_ns, probe.counters()?, probe.listeners()?, 0);
        snap.ratios = ratios_by_series(&self.window, &[CAPTURE_SLOT]);
        let signals = signals(&self.window, &snap);
        let t = *self.detector.thresholds();
        for (c, tr) in self.detector.evaluate(&signals, now_ns) {
            let line = detector_line(c, tr, &signals, &snap, &t);
            report.detector.push((now_ns, line));
        }
        if let Some(step) = self.step_ns
            && now_ns >= self.next_step_ns
        {
            let labels = [(CAPTURE_SLOT, "capture".to_owned())];
            let mut families = exposition::counter_families(&probe.counters()?, &labels);
            families.extend(exposition::latency_families(&probe.latency()?));
            families.extend(exposition::scan_families(&snap, &labels));
            families.extend(exposition::listener_families(&probe.listeners()?, &snap));
            let firing: Vec<(&str, bool)> = crate::detector::Condition::ALL
                .iter()
                .map(|c| (c.label(), self.detector.firing(*c)))
                .collect();
            families.push(exposition::detector_family(&firing));
            report.series.record(now_ns, &families);
            self.next_step_ns = self
                .next_step_ns
                .saturating_add(step)
                .max(now_ns.saturating_add(1));
        }
        Ok(())
    }
}

/// The flow table's hash seed in replay (any fixed non-zero value).
const REPLAY_FLOW_SEED: u64 = 0x6861_6e64_7368_616b;

pub fn replay(args: &ReplayArgs) -> Result<Report> {
    let path = args.file.as_path();
    // Open first: an unreadable file is the most likely mistake.
    let mut reader = Reader::open(path)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("cannot read {}", path.display()))?;
    crate::privileges::check()?;
    // A fixed seed: a capture replays to the same numbers every time.
    let options = LoadOptions {
        flow_table_size: args.flow_table_size,
        clock_from_map: true,
        flow_seed: Some(REPLAY_FLOW_SEED),
        ..LoadOptions::default()
    };
    let mut probe = Probe::load(&options)?;
    // BPF_PROG_TEST_RUN runs the programs on this namespace's loopback.
    probe.set_iface_slot(lo_ifindex(), CAPTURE_SLOT)?;
    let ports = if args.listener_ports.is_empty() {
        listeners_in(path).unwrap_or_default()
    } else {
        args.listener_ports.clone()
    };
    probe.track_listener_ports(&ports)?;

    let mut report = Report {
        file: path.display().to_string(),
        link: None,
        frames: 0,
        too_short: 0,
        other_link: 0,
        cut: 0,
        not_run: 0,
        first_not_run: None,
        clamped_timestamps: 0,
        reordered: 0,
        compression: reader.compression,
        first_ns: 0,
        last_ns: 0,
        counters: Vec::new(),
        latency: Vec::new(),
        listeners: Vec::new(),
        error: None,
        detector: Vec::new(),
        series: Recorder::default(),
    };
    let thresholds = crate::run::thresholds(&args.detector, args.handshake_timeout)?;
    let mut ticker = Ticker {
        timeout: args.handshake_timeout,
        window: CounterWindow::new(RATIO_WINDOW, thresholds.window),
        detector: Detector::new(thresholds),
        step_ns: matches!(
            args.format,
            ReplayFormat::Openmetrics | ReplayFormat::Promtool
        )
        .then(|| u64::try_from(args.step.as_nanos()).unwrap_or(u64::MAX)),
        next_step_ns: 0,
    };
    let progress = args.progress || (std::io::stderr().is_terminal() && reader.size > 64 << 20);
    let mut last_progress = Instant::now();
    let explainer = if args.explain {
        Some((probe.flow_reader()?, probe.flow_seed()?))
    } else {
        None
    };
    let mut run = Runner {
        explainer,
        clock_ns: 0,
    };
    let mut reorder = Reorder::default();
    let mut ready = Vec::new();
    let mut next_scan_ns = 0u64;
    loop {
        let packet = match reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                // Keep what was counted so far; say where it stopped.
                report.error = Some(format!("{}: {e}", path.display()));
                break;
            }
        };
        // A packet of an interface we do not read (pcapng): skipped, and its
        // time is no part of the capture's.
        if let LinkType::Other(_) = packet.link {
            report.frames += 1;
            report.other_link += 1;
            continue;
        }
        report.link.get_or_insert(packet.link.name());
        if report.frames == report.other_link {
            report.first_ns = packet.ts_ns;
            // The first scan and sample see the state before any packet.
            ticker.next_step_ns = packet.ts_ns;
            ticker.tick(&mut probe, packet.ts_ns, &mut report)?;
            next_scan_ns = packet.ts_ns.saturating_add(SCAN_EVERY_NS);
        }
        report.frames += 1;
        report.last_ns = report.last_ns.max(packet.ts_ns);
        // SYN-ACKs held for their SYN whose wait is over run before the
        // scans below, which must see them.
        reorder.due(packet.ts_ns, &mut ready);
        for frame in ready.drain(..) {
            run.frame(&mut probe, frame, &mut report)?;
        }
        // Scans on the second, through gaps in the capture too (up to a
        // point), so that the detector and the series keep capture time.
        if packet.ts_ns >= next_scan_ns {
            let behind = (packet.ts_ns - next_scan_ns) / SCAN_EVERY_NS;
            if behind > MAX_SCANS_PER_GAP {
                next_scan_ns += (behind - MAX_SCANS_PER_GAP) * SCAN_EVERY_NS;
            }
            while next_scan_ns <= packet.ts_ns {
                ticker.tick(&mut probe, next_scan_ns, &mut report)?;
                next_scan_ns = next_scan_ns.saturating_add(SCAN_EVERY_NS);
            }
        }
        if packet.frame.len() < MIN_FRAME {
            report.too_short += 1;
            continue;
        }
        let seg = explain::segment(&packet.frame);
        let frame = Numbered {
            number: report.frames,
            packet,
        };
        reorder.push(frame, seg.as_ref(), &mut ready);
        for frame in ready.drain(..) {
            run.frame(&mut probe, frame, &mut report)?;
        }
        if progress && last_progress.elapsed() >= Duration::from_millis(250) {
            last_progress = Instant::now();
            let pct = reader.offset() as f64 * 100.0 / reader.size.max(1) as f64;
            eprint!(
                "\rreplaying {}: {pct:5.1} % ({} frames)",
                path.display(),
                report.frames
            );
            let _ = std::io::stderr().flush();
        }
    }
    if progress {
        eprintln!(
            "\rreplaying {}: 100.0 % ({} frames)",
            path.display(),
            report.frames
        );
    }
    reorder.finish(&mut ready);
    for frame in ready.drain(..) {
        run.frame(&mut probe, frame, &mut report)?;
    }
    report.reordered = reorder.reordered;
    report.clamped_timestamps = reader.clamped_timestamps;
    // A last scan and sample at the capture's end; then whatever is still
    // open timed out.
    if report.frames > 0 && next_scan_ns > report.last_ns {
        ticker.tick(&mut probe, report.last_ns, &mut report)?;
    }
    expire(&mut probe, u64::MAX, None)?;
    report.counters = probe.counters()?;
    report.latency = probe.latency()?;
    report.listeners = probe.listeners()?;
    Ok(report)
}

impl Report {
    /// What was not run as it came, for the table's first line.
    fn notes(&self) -> String {
        let mut out = String::new();
        for (n, what) in [
            (self.too_short, "too short to run"),
            (self.other_link, "of a link type not read, skipped"),
            (self.cut, "run on their first 2048 bytes (headers)"),
            (
                self.clamped_timestamps,
                "with a sub-second field out of range, clamped",
            ),
            (
                self.reordered,
                "SYN-ACKs run after a SYN captured just after them",
            ),
        ] {
            if n > 0 {
                out.push_str(&format!(", {n} {what}"));
            }
        }
        if let Some((frame, e)) = &self.first_not_run {
            out.push_str(&format!(
                ", {} the kernel would not run (first: frame {frame}: {e})",
                self.not_run
            ));
        }
        out
    }

    /// A counter summed over families, for one direction.
    pub fn get(&self, direction: Direction, counter: Counter) -> u64 {
        Family::ALL
            .iter()
            .map(|f| {
                self.counters
                    .get(counter_index(CAPTURE_SLOT, *f, direction, counter) as usize)
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// A latency quantile in seconds, interpolated within its log2 bucket as
    /// Prometheus' histogram_quantile does; None without samples.
    pub fn quantile(&self, direction: Direction, leg: Leg, q: f64) -> Option<f64> {
        let base = base_index(direction, leg) as usize;
        let counts: Vec<u64> = (0..BUCKETS as usize)
            .map(|b| self.latency.get(base + b).copied().unwrap_or(0))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut cumulative = 0u64;
        for (b, n) in counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            if (cumulative + n) as f64 >= rank {
                let b = b as u32;
                if b >= FINITE_BUCKETS {
                    return Some(upper_bound_seconds(FINITE_BUCKETS - 1));
                }
                let lower = if b == 0 {
                    0.0
                } else {
                    upper_bound_seconds(b - 1)
                };
                let upper = upper_bound_seconds(b);
                return Some(lower + (upper - lower) * (rank - cumulative as f64) / *n as f64);
            }
            cumulative += n;
        }
        None
    }

    pub fn mean(&self, direction: Direction, leg: Leg) -> Option<f64> {
        let base = base_index(direction, leg) as usize;
        let total: u64 = (0..BUCKETS as usize)
            .map(|b| self.latency.get(base + b).copied().unwrap_or(0))
            .sum();
        let sum = self
            .latency
            .get(sum_index(direction, leg) as usize)
            .copied()
            .unwrap_or(0);
        (total > 0).then(|| sum as f64 * 1e-9 / total as f64)
    }
}

/// Rows of the funnel: (name in the table and JSON, counter).
pub const FUNNEL: &[(&str, Counter)] = &[
    ("syn_packets", Counter::SynPackets),
    ("attempts", Counter::Attempts),
    ("synack", Counter::SynAck),
    ("completed", Counter::Completed),
    ("rejected", Counter::Rejected),
    ("aborted", Counter::Aborted),
    ("timeouts_syn_sent", Counter::TimeoutSynSent),
    ("timeouts_syn_received", Counter::TimeoutSynReceived),
    ("retransmits_syn", Counter::RetransmitSyn),
    ("retransmits_synack", Counter::RetransmitSynAck),
    ("invalid_synack_bad_ack", Counter::InvalidSynAckAck),
    ("invalid_synack_changed_isn", Counter::InvalidSynAckSeq),
    ("invalid_ack_bad_seq", Counter::InvalidAckSeq),
    ("invalid_ack_bad_ack", Counter::InvalidAckAck),
    ("invalid_rst_out_of_window", Counter::InvalidRst),
    ("unsolicited_synack", Counter::Unsolicited),
    ("late_segments", Counter::LateSegment),
    ("superseded_syn_sent", Counter::SupersededSynSent),
    ("superseded_syn_received", Counter::SupersededSynReceived),
    ("syn_untracked", Counter::SynUntracked),
    ("evicted_syn_sent", Counter::EvictedSynSent),
    ("evicted_syn_received", Counter::EvictedSynReceived),
    ("duplicate_observations", Counter::DuplicateObservation),
];

fn parse_error_totals(r: &Report) -> Vec<(&'static str, u64)> {
    handshake_common::parse::ParseError::ALL
        .iter()
        .map(|e| {
            (
                e.label(),
                Direction::ALL.iter().map(|d| r.get(*d, e.counter())).sum(),
            )
        })
        .collect()
}

fn fmt_seconds(s: Option<f64>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s < 1e-3 => format!("{:.1}µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.2}ms", s * 1e3),
        Some(s) => format!("{s:.3}s"),
    }
}

pub fn render(r: &Report, format: ReplayFormat, step_s: u64) -> Result<String> {
    let span = r.last_ns.saturating_sub(r.first_ns) as f64 / 1e9;
    Ok(match format {
        ReplayFormat::Openmetrics => r.series.openmetrics(),
        ReplayFormat::Promtool => r.series.promtool(step_s),
        ReplayFormat::Table => {
            let mut out = String::new();
            out.push_str(&format!(
                "capture   {} ({}{}), {} frames over {span:.3} s{}\n\n",
                r.file,
                r.link.unwrap_or("empty"),
                r.compression.map(|c| format!(", {c}")).unwrap_or_default(),
                r.frames,
                r.notes()
            ));
            out.push_str(&format!("{:<28}{:>12}{:>12}\n", "", "inbound", "outbound"));
            for (name, c) in FUNNEL {
                let (i, o) = (
                    r.get(Direction::Inbound, *c),
                    r.get(Direction::Outbound, *c),
                );
                if i + o > 0
                    || matches!(
                        name,
                        &"attempts" | &"synack" | &"completed" | &"rejected" | &"aborted"
                    )
                {
                    out.push_str(&format!("{name:<28}{i:>12}{o:>12}\n"));
                }
            }
            out.push_str(
                "\nlatency                          p50         p90         p99        mean\n",
            );
            for (name, leg) in [
                ("syn -> synack", Leg::SynToSynAck),
                ("synack -> ack", Leg::SynAckToAck),
            ] {
                for d in Direction::ALL {
                    if r.mean(d, leg).is_none() {
                        continue;
                    }
                    out.push_str(&format!(
                        "{:<28}{:>12}{:>12}{:>12}{:>12}\n",
                        format!("{name} ({})", d.label()),
                        fmt_seconds(r.quantile(d, leg, 0.5)),
                        fmt_seconds(r.quantile(d, leg, 0.9)),
                        fmt_seconds(r.quantile(d, leg, 0.99)),
                        fmt_seconds(r.mean(d, leg)),
                    ));
                }
            }
            let errors: Vec<_> = parse_error_totals(r)
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect();
            if !errors.is_empty() {
                out.push_str("\nparse errors\n");
                for (name, n) in errors {
                    out.push_str(&format!("  {name:<26}{n:>12}\n"));
                }
            }
            out.push_str(&format!(
                "\n{:<8}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
                "port", "attempts", "synack", "completed", "rejected", "aborted"
            ));
            for (port, c) in r.listeners.iter().filter(|(_, c)| c.attempts > 0) {
                let name = if *port == 0 {
                    "other".to_owned()
                } else {
                    port.to_string()
                };
                out.push_str(&format!(
                    "{name:<8}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
                    c.attempts, c.synack, c.completed, c.rejected, c.aborted
                ));
            }
            if !r.detector.is_empty() {
                out.push_str("\ndetector (capture time from the first frame)\n");
                for (t, line) in &r.detector {
                    let at = t.saturating_sub(r.first_ns) as f64 / 1e9;
                    out.push_str(&format!("  +{at:.1}s detector {line}\n"));
                }
            }
            out
        }
        ReplayFormat::Json => {
            use serde_json::{Map, Value, json};
            let direction = |d: Direction| {
                let mut fields: Map<String, Value> = FUNNEL
                    .iter()
                    .map(|(n, c)| ((*n).to_owned(), json!(r.get(d, *c))))
                    .collect();
                let lat: Map<String, Value> =
                    [("synack", Leg::SynToSynAck), ("ack", Leg::SynAckToAck)]
                        .iter()
                        .map(|(n, leg)| {
                            (
                                (*n).to_owned(),
                                json!({
                                    "p50": r.quantile(d, *leg, 0.5),
                                    "p90": r.quantile(d, *leg, 0.9),
                                    "p99": r.quantile(d, *leg, 0.99),
                                    "mean": r.mean(d, *leg),
                                }),
                            )
                        })
                        .collect();
                fields.insert("latency_seconds".to_owned(), Value::Object(lat));
                Value::Object(fields)
            };
            let errors: Map<String, Value> = parse_error_totals(r)
                .iter()
                .map(|(n, v)| ((*n).to_owned(), json!(v)))
                .collect();
            let listeners: Map<String, Value> = r
                .listeners
                .iter()
                .map(|(p, c)| {
                    let name = if *p == 0 {
                        "other".to_owned()
                    } else {
                        p.to_string()
                    };
                    (
                        name,
                        json!({
                            "attempts": c.attempts,
                            "synack": c.synack,
                            "completed": c.completed,
                            "rejected": c.rejected,
                            "aborted": c.aborted,
                        }),
                    )
                })
                .collect();
            let detector: Vec<Value> = r
                .detector
                .iter()
                .map(|(t, line)| {
                    json!({
                        "at_seconds": t.saturating_sub(r.first_ns) as f64 / 1e9,
                        "line": line,
                    })
                })
                .collect();
            let report = json!({
                "file": r.file,
                "link_type": r.link,
                "compression": r.compression,
                "frames": r.frames,
                "too_short": r.too_short,
                "other_link_type": r.other_link,
                "cut_to_headers": r.cut,
                "not_run": r.not_run,
                "clamped_timestamps": r.clamped_timestamps,
                "reordered_synacks": r.reordered,
                "duration_seconds": span,
                "complete": r.error.is_none(),
                "inbound": direction(Direction::Inbound),
                "outbound": direction(Direction::Outbound),
                "parse_errors": errors,
                "listeners": listeners,
                "detector": detector,
            });
            format!("{report}\n")
        }
        ReplayFormat::Prometheus => {
            let labels = [(CAPTURE_SLOT, "capture".to_owned())];
            let mut families = exposition::counter_families(&r.counters, &labels);
            families.extend(exposition::latency_families(&r.latency));
            families.extend(exposition::listener_families(
                &r.listeners,
                &crate::scan::Snapshot::default(),
            ));
            families.push(exposition::build_info());
            exposition::encode(&families)?
        }
    })
}

/// Runs a replay and prints its report; fails (after printing what was
/// counted) when the capture could not be read to its end.
pub fn run(args: &ReplayArgs) -> Result<()> {
    let report = replay(args)?;
    debug_assert_eq!(report.counters.len(), COUNTERS_LEN as usize);
    print!(
        "{}",
        render(&report, args.format, args.step.as_secs().max(1))?
    );
    // A capture with more handshakes open at once than the table holds
    // (a flood) loses some: say so, and how to replay it whole.
    let evicted: u64 = Direction::ALL
        .iter()
        .map(|d| {
            report.get(*d, Counter::EvictedSynSent) + report.get(*d, Counter::EvictedSynReceived)
        })
        .sum();
    if evicted > 0 {
        eprintln!(
            "handshake-monitor: warning: {evicted} handshakes in progress were evicted from a full flow table and not followed to their end; replay again with a larger --flow-table-size (now {})",
            args.flow_table_size
        );
    }
    match report.error {
        Some(e) => Err(anyhow::anyhow!("{e} (counts above are up to there)")),
        None => Ok(()),
    }
}

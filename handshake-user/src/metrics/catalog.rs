//! The metric contract: which kernel counter feeds which series (written
//! once, here), and each metric's HELP text.
use handshake_common::{counters::Counter, parse::ParseError};

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

/// A parse error's series: its counter and its `reason`, both from
/// [`ParseError`], where the label is spelled once.
const fn parse_error(e: ParseError) -> Series {
    hook(
        e.counter(),
        "tcp_handshake_parse_errors_total",
        Some(("reason", e.label())),
    )
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
    parse_error(ParseError::EthTruncated),
    parse_error(ParseError::VlanTruncated),
    parse_error(ParseError::TooManyVlans),
    parse_error(ParseError::Ipv4Truncated),
    parse_error(ParseError::Ipv4BadHeaderLength),
    parse_error(ParseError::Ipv6Truncated),
    parse_error(ParseError::Ipv6ExtTruncated),
    parse_error(ParseError::Ipv6ExtChainTooLong),
    parse_error(ParseError::TcpTruncated),
    parse_error(ParseError::TcpBadDataOffset),
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
            "Entries in the flow table at the last scan, by state: live (handshakes in progress) and tombstone (timed out, or ended in the last 5 s, kept to recognise what the peers send again; reused first when a bucket is full)."
        }
        "tcp_handshake_flow_table_capacity" => {
            "Capacity of the flow table (8-way buckets, two per flow); past about 70 % live occupancy, a few new handshakes find both their buckets full and evict old ones (tcp_handshake_evicted_total), and ratios become untrustworthy."
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
        "tcp_handshake_listener_accept_queue" => {
            "Connections completed and waiting for accept() on a listening port, summed over its sockets (sock_diag, as ss shows Recv-Q): a growing queue is an application not accepting."
        }
        "tcp_handshake_listener_accept_queue_limit" => {
            "The backlog of a listening port's sockets, summed: when the accept queue reaches it, the kernel drops SYNs."
        }
        "tcp_handshake_listener_half_open" => {
            "Inbound handshakes in progress per local server port, at the last scan."
        }
        "tcp_handshake_detector_firing" => "1 while the built-in detector's condition is firing.",
        "tcp_handshake_scan_duration_seconds" => "Time the last flow-table scan took.",
        _ => "",
    }
}

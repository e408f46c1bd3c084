//! `replay --explain`: for each handshake segment of a capture, one line
//! saying what the programs made of it and why: the frame number, its
//! time, the flow, the segment, the verdict (the counters it moved), and
//! for an invalid one what was expected and what came. Read in user space
//! around each run of the programs: the flow's entry before it, the
//! counters before and after; nothing is added to the programs' path.
use std::net::{Ipv4Addr, Ipv6Addr};

use handshake_common::{
    counters::{COUNTERS_PER_IFACE, COUNTERS_PER_SLOT, Counter},
    flow::{FlowKey, FlowState, Stage},
    handshake::{SegmentKind, classify},
    parse::{Parsed, TcpSegment, parse_ethernet},
    table::{self, WAYS},
};

use crate::{exposition::CATALOG, kernel::readers::FlowReader};

/// The flow's entry (key as tracked, state), found from either end.
pub fn lookup(reader: &FlowReader, seed: u64, seg: &TcpSegment) -> Option<(FlowKey, FlowState)> {
    let key = FlowKey::of_segment(seg);
    // The hash is the same from both ends: the same two buckets hold
    // either key.
    let place = table::place(
        table::flow_hash(&key, seed),
        reader.capacity() / WAYS as u32 - 1,
    );
    place.buckets.into_iter().find_map(|b| {
        let bucket = reader.bucket(b).ok()?;
        [key, key.reversed()]
            .into_iter()
            .find_map(|k| table::find(&bucket, &k, place.tag).map(|i| (k, bucket.entries[i].state)))
    })
}

/// The segment, if it is TCP.
pub fn segment(frame: &[u8]) -> Option<TcpSegment> {
    match parse_ethernet(frame) {
        Ok(Parsed::Tcp(seg)) => Some(seg),
        _ => None,
    }
}

fn addr(family: u8, words: &[u32; 4]) -> String {
    let mut b = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    if family == handshake_common::counters::Family::Ipv6 as u8 {
        format!("[{}]", Ipv6Addr::from(b))
    } else {
        Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
    }
}

fn kind(seg: &TcpSegment) -> &'static str {
    match classify(seg.flags) {
        SegmentKind::Syn => "SYN",
        SegmentKind::SynAck => "SYN-ACK",
        SegmentKind::Rst => "RST",
        SegmentKind::Ack => "ACK",
        SegmentKind::Other => "other",
    }
}

/// The counters that moved between `before` and `after` (any slot), as the
/// series they feed: `attempts`, `invalid{reason="..."}`, ...
fn moved(before: &[u64], after: &[u64]) -> Vec<(Counter, String)> {
    let mut out = Vec::new();
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        if b <= a {
            continue;
        }
        let within = i as u32 % COUNTERS_PER_IFACE % COUNTERS_PER_SLOT;
        let Some(counter) = Counter::ALL.get(within as usize).copied() else {
            continue;
        };
        if matches!(counter, Counter::Packets | Counter::SynPackets) {
            continue;
        }
        let Some(series) = CATALOG.iter().find(|s| s.counter == counter) else {
            continue;
        };
        let name = series
            .metric
            .trim_start_matches("tcp_handshake_")
            .trim_end_matches("_total");
        let text = match series.label {
            Some((k, v)) => format!("{name}{{{k}=\"{v}\"}}"),
            None => name.to_owned(),
        };
        if !out.iter().any(|(c, _)| *c == counter) {
            out.push((counter, text));
        }
    }
    out
}

/// What an invalid verdict expected, from the flow's entry before.
fn expected(counter: Counter, seg: &TcpSegment, state: Option<&FlowState>) -> Option<String> {
    let s = state?;
    let x1 = s.client_isn.wrapping_add(1);
    let y1 = s.server_isn.wrapping_add(1);
    Some(match counter {
        Counter::InvalidSynAckAck => format!("expected ack {x1}, got {}", seg.ack),
        Counter::InvalidSynAckSeq => {
            format!(
                "expected seq {} (the first SYN-ACK's), got {}",
                s.server_isn, seg.seq
            )
        }
        Counter::InvalidAckSeq => format!("expected seq {}, got {}", s.synack_ack, seg.seq),
        Counter::InvalidAckAck => format!(
            "expected ack {y1}{}, got {}",
            if s.synack_payload > 0 {
                format!("..{}", y1.wrapping_add(u32::from(s.synack_payload)))
            } else {
                String::new()
            },
            seg.ack
        ),
        Counter::InvalidRst => {
            if s.stage == Stage::SynReceived as u8 {
                format!(
                    "expected seq {}..{} (client) or {y1} (server), got {}",
                    s.synack_ack,
                    s.synack_ack.wrapping_add(u32::from(s.synack_window)),
                    seg.seq
                )
            } else {
                format!("expected ack {x1}, got {}", seg.ack)
            }
        }
        _ => return None,
    })
}

/// The line for one frame, or None when it moved nothing worth a line (a
/// data segment).
pub fn line(
    frame_no: u64,
    at_s: f64,
    seg: &TcpSegment,
    state: Option<&FlowState>,
    before: &[u64],
    after: &[u64],
) -> Option<String> {
    let verdicts = moved(before, after);
    let handshake_flags = !matches!(classify(seg.flags), SegmentKind::Ack | SegmentKind::Other);
    if verdicts.is_empty() && !handshake_flags {
        return None;
    }
    let family = seg.family as u8;
    let mut out = format!(
        "frame {frame_no} +{at_s:.6}s {}:{} > {}:{} {} seq={} ack={}: ",
        addr(family, &seg.src_addr),
        seg.src_port,
        addr(family, &seg.dst_addr),
        seg.dst_port,
        kind(seg),
        seg.seq,
        seg.ack,
    );
    if verdicts.is_empty() {
        out.push_str("no change");
    } else {
        let names: Vec<&str> = verdicts.iter().map(|(_, t)| t.as_str()).collect();
        out.push_str(&names.join(", "));
    }
    for (counter, _) in &verdicts {
        if *counter == Counter::Unsolicited {
            out.push_str(" (no SYN tracked for this flow)");
        } else if let Some(why) = expected(*counter, seg, state) {
            out.push_str(&format!(" ({why})"));
        }
    }
    Some(out)
}

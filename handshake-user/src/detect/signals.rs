//! What a scan hands on: the ratio gauges over --ratio-window, and the
//! detector's signals over --detector.window. Live and replay share it.
use std::collections::BTreeMap;

use handshake_common::counters::{Counter, Direction, Family};

use crate::{detector::Signals, scan::Snapshot, window::CounterWindow};

/// (completion, SYN-ACK) ratio per (slot, family, direction) over the long
/// window, for the interface slots given.
pub fn ratios_by_series(
    window: &CounterWindow,
    slots: &[u32],
) -> BTreeMap<(u32, u8, u8), (f64, f64)> {
    let mut out = BTreeMap::new();
    let Some(span) = window.long() else {
        return out;
    };
    for slot in slots {
        for family in Family::ALL {
            for direction in Direction::ALL {
                out.insert(
                    (*slot, family as u8, direction as u8),
                    span.ratios((*slot, family, direction)),
                );
            }
        }
    }
    out
}

/// The detector's inputs: the scan's half-open counts and the counters'
/// increase over the short window.
pub fn signals(window: &CounterWindow, snap: &Snapshot) -> Signals {
    let inbound_half_open = snap
        .half_open
        .iter()
        .filter(|((_, _, d, _), _)| *d == Direction::Inbound as u8)
        .map(|(_, n)| n)
        .sum();
    let mut s = Signals {
        inbound_half_open,
        young_half_open: snap.young_half_open,
        accept_queues: snap.accept_queues.iter().map(|(p, q)| (*p, *q)).collect(),
        ..Signals::default()
    };
    if let Some(span) = window.short() {
        s.span_s = span.seconds();
        s.attempts = span.inbound(Counter::Attempts);
        s.completed = span.inbound(Counter::Completed);
        s.rejected = span.inbound(Counter::Rejected);
        s.ports = span.ports();
        s.syncookies_sent = span.syncookies_sent();
    }
    s
}

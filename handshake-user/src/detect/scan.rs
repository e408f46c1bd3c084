//! The background scan: once per --scan-interval, read the flow table in
//! batches, expire what waited longer than --handshake-timeout, and compute
//! the gauges the scrape handler serves (half-open counts and ages, per
//! listener, the ratio window). Scrapes never scan.
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use handshake_common::{
    counters::{Direction, Family},
    expire::{REORDER_WINDOW_NS, TOMBSTONE_LINGER_NS},
    flow::{FlowKey, FlowState, Stage},
    listener::OTHER_PORT,
};

use crate::sources::{SourceCounter, SourceSummary};

/// Expirations per scan at most: a flood that times out in bulk is worked
/// off over several scans instead of stalling one.
pub const MAX_EXPIRE_PER_SCAN: usize = 50_000;

/// (interface slot, family, direction).
pub type SeriesKey = (u32, Family, Direction);

/// What the last scan found.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Half-open handshakes by (slot, family, direction) and stage.
    pub half_open: BTreeMap<(u32, u8, u8, u8), u64>,
    /// Age in seconds of the oldest half-open handshake, by stage.
    pub oldest_seconds: [f64; 2],
    /// Flow-table entries: handshakes in progress (live) and tombstones.
    pub entries: u64,
    /// Of `entries`, timed-out handshakes kept to recognise late segments
    /// (those the scan expires become tombstones too).
    pub tombstones: u64,
    pub capacity: u32,
    /// Inbound half-open handshakes per tracked listener port (0: other).
    pub listener_half_open: BTreeMap<u16, u64>,
    /// Accept queues of the tracked ports that have a listener (sock_diag;
    /// none in replay).
    pub accept_queues: BTreeMap<u16, crate::sockdiag::AcceptQueue>,
    /// Completion and SYN-ACK ratios over the window, per series; NaN where
    /// the window saw no attempt.
    pub ratios: BTreeMap<(u32, u8, u8), (f64, f64)>,
    /// Inbound half-open handshakes whose SYN came within the young age
    /// (the detector's window): the present inflow of stalled handshakes.
    pub young_half_open: u64,
    /// Inbound half-open by destination port, largest first, and where they
    /// come from (for the detector's report only: never a label).
    pub top_ports: Vec<(u16, u64)>,
    pub sources: SourceSummary,
    pub expired: u64,
    pub scan_seconds: f64,
}

pub fn stage_index(stage: u8) -> usize {
    usize::from(stage == Stage::SynReceived as u8)
}

fn top<K: Clone + Ord>(counts: HashMap<K, u64>, n: usize) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// What a scan found to do: handshakes to expire (oldest first) and
/// tombstones to forget, each at most [`MAX_EXPIRE_PER_SCAN`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chores {
    pub expire: Vec<(FlowKey, u64)>,
    pub forget: Vec<(FlowKey, u64)>,
    /// Tap mode: SYN-ACKs whose SYN did not come in time, to be counted
    /// unsolicited and freed (by the same expire program).
    pub release: Vec<(FlowKey, u64)>,
}

/// Builds the live half-open picture and the chores from flow-table
/// entries streamed into it, one at a time: a scan of a million entries
/// keeps no copy of the table.
pub struct Summarizer<'a> {
    now_ns: u64,
    timeout_ns: u64,
    tracked_ports: &'a [u16],
    snap: Snapshot,
    expired: Vec<(FlowKey, u64, u64)>,
    chores: Chores,
    young_ns: u64,
    ports: HashMap<u16, u64>,
    sources: SourceCounter,
}

impl<'a> Summarizer<'a> {
    /// `young`: half-open handshakes younger than this are counted apart
    /// ([`Snapshot::young_half_open`]).
    pub fn new(now_ns: u64, timeout: Duration, young: Duration, tracked_ports: &'a [u16]) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            now_ns,
            timeout_ns: ns(timeout),
            tracked_ports,
            snap: Snapshot::default(),
            expired: Vec::new(),
            chores: Chores::default(),
            young_ns: ns(young),
            ports: HashMap::new(),
            sources: SourceCounter::default(),
        }
    }

    /// Tombstones (timed out or ended, kept to recognise what the peers
    /// send again) are not half-open. Timed-out ones are forgotten once
    /// [`TOMBSTONE_LINGER_NS`] past their timeout; ended ones need no
    /// chore: past [`handshake_common::expire::ENDED_LINGER_NS`] the kernel reads them as free space
    /// and the next flow in their bucket takes the way, so they are not
    /// counted here either.
    pub fn add(&mut self, key: &FlowKey, state: &FlowState) {
        if state.stage == Stage::Ended as u8 {
            if state.ended_recently(self.now_ns) {
                self.snap.entries += 1;
                self.snap.tombstones += 1;
            }
            return;
        }
        self.snap.entries += 1;
        let age = self.now_ns.saturating_sub(state.syn_ns);
        if state.stage == Stage::SynAckFirst as u8 {
            // Not a handshake yet: a SYN-ACK waiting for its SYN (tap mode).
            if age > REORDER_WINDOW_NS && self.chores.release.len() < MAX_EXPIRE_PER_SCAN {
                self.chores.release.push((*key, state.syn_ns));
            }
            return;
        }
        if state.stage == Stage::Expired as u8 {
            self.snap.tombstones += 1;
            if age >= self.timeout_ns.saturating_add(TOMBSTONE_LINGER_NS)
                && self.chores.forget.len() < MAX_EXPIRE_PER_SCAN
            {
                self.chores.forget.push((*key, state.syn_ns));
            }
            return;
        }
        if age >= self.timeout_ns {
            self.expired.push((*key, state.syn_ns, age));
            return;
        }
        let stage = stage_index(state.stage);
        *self
            .snap
            .half_open
            .entry((
                u32::from(state.iface_slot),
                key.family,
                state.direction,
                state.stage,
            ))
            .or_default() += 1;
        let secs = age as f64 / 1e9;
        if secs > self.snap.oldest_seconds[stage] {
            self.snap.oldest_seconds[stage] = secs;
        }
        if state.direction == Direction::Inbound as u8 {
            let port = if self.tracked_ports.contains(&key.dst_port) {
                key.dst_port
            } else {
                OTHER_PORT
            };
            *self.snap.listener_half_open.entry(port).or_default() += 1;
            *self.ports.entry(key.dst_port).or_default() += 1;
            self.sources.add(key);
            if age < self.young_ns {
                self.snap.young_half_open += 1;
            }
        }
    }

    pub fn finish(mut self) -> (Snapshot, Chores) {
        self.snap.top_ports = top(self.ports, 5);
        self.snap.sources = self.sources.finish();
        self.expired
            .sort_by_key(|(_, _, age)| std::cmp::Reverse(*age));
        self.expired.truncate(MAX_EXPIRE_PER_SCAN);
        self.chores.expire = self.expired.into_iter().map(|(k, t, _)| (k, t)).collect();
        (self.snap, self.chores)
    }
}

/// [`Summarizer`] over a table read already in memory.
pub fn summarize(
    flows: &[(FlowKey, FlowState)],
    now_ns: u64,
    timeout: Duration,
    tracked_ports: &[u16],
) -> (Snapshot, Chores) {
    let mut s = Summarizer::new(now_ns, timeout, Duration::ZERO, tracked_ports);
    for (k, st) in flows {
        s.add(k, st);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: [u8; 4], port: u16, stage: Stage, syn_ns: u64) -> (FlowKey, FlowState) {
        (
            FlowKey::new([u32::from_ne_bytes(src), 0, 0, 0], [1, 0, 0, 0], 5, port, 0),
            FlowState {
                syn_ns,
                stage: stage as u8,
                direction: Direction::Inbound as u8,
                iface_slot: 2,
                ..FlowState::default()
            },
        )
    }

    #[test]
    fn summarize_counts_ages_and_expiries() {
        let s = 1_000_000_000u64;
        let flows = vec![
            flow([10, 0, 0, 1], 80, Stage::SynSent, 95 * s),
            flow([10, 0, 0, 2], 80, Stage::SynReceived, 90 * s),
            flow([10, 0, 1, 3], 22, Stage::SynSent, 50 * s), // 50 s old: expired
            flow([10, 0, 1, 4], 22, Stage::Expired, 40 * s), // a tombstone, lingering
        ];
        let (snap, chores) = summarize(&flows, 100 * s, Duration::from_secs(30), &[80]);
        assert_eq!(
            chores,
            Chores {
                expire: vec![(flows[2].0, 50 * s)],
                forget: vec![],
                release: vec![],
            }
        );
        assert_eq!(snap.entries, 4);
        // 30 s timeout + 130 s linger after its SYN, the tombstone goes.
        let (_, chores) = summarize(&flows, 200 * s, Duration::from_secs(30), &[80]);
        assert_eq!(chores.forget, vec![(flows[3].0, 40 * s)]);
        assert_eq!(
            snap.half_open.get(&(2, 0, 0, Stage::SynSent as u8)),
            Some(&1)
        );
        assert_eq!(
            snap.half_open.get(&(2, 0, 0, Stage::SynReceived as u8)),
            Some(&1)
        );
        assert_eq!(snap.oldest_seconds, [5.0, 10.0]);
        assert_eq!(snap.listener_half_open.get(&80), Some(&2));
        assert_eq!(snap.sources.top, vec![("10.0.0.0/24".to_owned(), 2)]);
        assert_eq!(snap.tombstones, 1);
    }

    #[test]
    fn ended_handshakes_count_while_remembered_and_need_no_chore() {
        let s = 1_000_000_000u64;
        let ended = |port, at| {
            let (k, mut st) = flow([10, 0, 0, 9], port, Stage::Ended, 0);
            st.synack_ns = at;
            (k, st)
        };
        // Their SYNs are long past the timeout: an ended handshake is not
        // half-open, and is never expired.
        let flows = vec![ended(80, 98 * s), ended(81, 90 * s)];
        let (snap, chores) = summarize(&flows, 100 * s, Duration::from_secs(30), &[80]);
        assert_eq!(chores, Chores::default());
        assert_eq!((snap.entries, snap.tombstones), (1, 1), "one remembered");
        assert!(snap.half_open.is_empty());
        assert!(snap.listener_half_open.is_empty());
    }

    /// Tap mode: a SYN-ACK waiting for its SYN is no half-open handshake;
    /// past the reorder window it is released (counted unsolicited by the
    /// expire program), not expired as a timeout.
    #[test]
    fn a_synack_waiting_for_its_syn_is_released_after_the_window() {
        let ms = 1_000_000;
        let flows = vec![
            flow([10, 0, 0, 1], 80, Stage::SynAckFirst, 1_000 * ms),
            flow([10, 0, 0, 2], 80, Stage::SynAckFirst, 1_045 * ms),
        ];
        let (snap, chores) = summarize(&flows, 1_050 * ms, Duration::from_secs(30), &[80]);
        assert_eq!(chores.release, vec![(flows[0].0, 1_000 * ms)]);
        assert!(chores.expire.is_empty() && chores.forget.is_empty());
        assert!(snap.half_open.is_empty());
        assert_eq!(snap.entries, 2);
    }
}

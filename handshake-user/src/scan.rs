//! The background scan: once per --scan-interval, read the flow table in
//! batches, expire what waited longer than --handshake-timeout, and compute
//! the gauges the scrape handler serves (half-open counts and ages, per
//! listener, the ratio window). Scrapes never scan.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use handshake_common::{
    counters::{Counter, Direction, Family, IFACE_SLOTS, counter_index},
    expire::TOMBSTONE_LINGER_NS,
    flow::{FlowKey, FlowState, Stage},
    listener::OTHER_PORT,
};

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
    pub entries: u64,
    pub capacity: u32,
    /// Inbound half-open handshakes per tracked listener port (0: other).
    pub listener_half_open: BTreeMap<u16, u64>,
    /// Completion and SYN-ACK ratios over the window, per series; NaN where
    /// the window saw no attempt.
    pub ratios: BTreeMap<(u32, u8, u8), (f64, f64)>,
    /// Inbound half-open by destination port and by source prefix, largest
    /// first (for the detector's report only: never a label).
    pub top_ports: Vec<(u16, u64)>,
    pub top_sources: Vec<(String, u64)>,
    pub expired: u64,
    pub scan_seconds: f64,
}

pub fn stage_index(stage: u8) -> usize {
    usize::from(stage == Stage::SynReceived as u8)
}

/// A source prefix (/24 or /64) as a compact key: family and masked bytes.
type Prefix = (u8, [u8; 16]);

fn prefix_of(key: &FlowKey) -> Prefix {
    let mut bytes = [0u8; 16];
    for (i, w) in key.src_addr.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    if key.family == Family::Ipv6 as u8 {
        bytes[8..].fill(0);
    } else {
        bytes[3..].fill(0);
    }
    (key.family, bytes)
}

fn prefix_text((family, b): Prefix) -> String {
    if family == Family::Ipv6 as u8 {
        format!("{}/64", Ipv6Addr::from(b))
    } else {
        format!("{}/24", Ipv4Addr::new(b[0], b[1], b[2], 0))
    }
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
    ports: HashMap<u16, u64>,
    sources: HashMap<Prefix, u64>,
}

impl<'a> Summarizer<'a> {
    pub fn new(now_ns: u64, timeout: Duration, tracked_ports: &'a [u16]) -> Self {
        Self {
            now_ns,
            timeout_ns: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            tracked_ports,
            snap: Snapshot::default(),
            expired: Vec::new(),
            chores: Chores::default(),
            ports: HashMap::new(),
            sources: HashMap::new(),
        }
    }

    /// Tombstones (timed out, kept for late retransmissions) are not
    /// half-open; they are forgotten once [`TOMBSTONE_LINGER_NS`] past their
    /// timeout.
    pub fn add(&mut self, key: &FlowKey, state: &FlowState) {
        self.snap.entries += 1;
        let age = self.now_ns.saturating_sub(state.syn_ns);
        if state.stage == Stage::Expired as u8 {
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
            *self.sources.entry(prefix_of(key)).or_default() += 1;
        }
    }

    pub fn finish(mut self) -> (Snapshot, Chores) {
        self.snap.top_ports = top(self.ports, 5);
        self.snap.top_sources = top(self.sources, 5)
            .into_iter()
            .map(|(p, n)| (prefix_text(p), n))
            .collect();
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
    let mut s = Summarizer::new(now_ns, timeout, tracked_ports);
    for (k, st) in flows {
        s.add(k, st);
    }
    s.finish()
}

/// Counter samples over the ratio window.
#[derive(Debug, Default)]
pub struct RatioWindow {
    samples: VecDeque<(Instant, Vec<u64>)>,
}

impl RatioWindow {
    /// Adds a sample of the `COUNTERS` array and drops those older than
    /// `window` (keeping one at or before the window's start).
    pub fn push(&mut self, at: Instant, counters: Vec<u64>, window: Duration) {
        self.samples.push_back((at, counters));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| at.duration_since(*t) >= window)
        {
            self.samples.pop_front();
        }
    }

    /// Increase of a counter over the window, for one series.
    fn delta(&self, key: SeriesKey, counter: Counter) -> u64 {
        let (Some((_, first)), Some((_, last))) = (self.samples.front(), self.samples.back())
        else {
            return 0;
        };
        let i = counter_index(key.0, key.1, key.2, counter) as usize;
        last.get(i)
            .copied()
            .unwrap_or(0)
            .saturating_sub(first.get(i).copied().unwrap_or(0))
    }

    /// Seconds the window spans now.
    pub fn span(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((a, _)), Some((b, _))) => b.duration_since(*a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// (completion ratio, SYN-ACK ratio) of a series; NaN with no attempts.
    pub fn ratios(&self, key: SeriesKey) -> (f64, f64) {
        let attempts = self.delta(key, Counter::Attempts);
        if attempts == 0 {
            return (f64::NAN, f64::NAN);
        }
        let a = attempts as f64;
        (
            self.delta(key, Counter::Completed) as f64 / a,
            self.delta(key, Counter::SynAck) as f64 / a,
        )
    }

    /// Inbound totals over the window, all interfaces and families:
    /// (attempts, completed).
    pub fn inbound_totals(&self) -> (u64, u64) {
        let mut attempts = 0;
        let mut completed = 0;
        for slot in 0..IFACE_SLOTS {
            for family in Family::ALL {
                attempts += self.delta((slot, family, Direction::Inbound), Counter::Attempts);
                completed += self.delta((slot, family, Direction::Inbound), Counter::Completed);
            }
        }
        (attempts, completed)
    }
}

#[cfg(test)]
mod tests {
    use handshake_common::counters::COUNTERS_LEN;

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
                forget: vec![]
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
        assert_eq!(snap.top_sources, vec![("10.0.0.0/24".to_owned(), 2)]);
    }

    #[test]
    fn ratio_window_uses_deltas() {
        let key = (1, Family::Ipv4, Direction::Inbound);
        let mut w = RatioWindow::default();
        let t0 = Instant::now();
        let mut c = vec![0u64; COUNTERS_LEN as usize];
        c[counter_index(1, Family::Ipv4, Direction::Inbound, Counter::Attempts) as usize] = 100;
        c[counter_index(1, Family::Ipv4, Direction::Inbound, Counter::Completed) as usize] = 90;
        w.push(t0, c.clone(), Duration::from_secs(60));
        assert!(w.ratios(key).0.is_nan(), "one sample: no window yet");
        c[counter_index(1, Family::Ipv4, Direction::Inbound, Counter::Attempts) as usize] = 200;
        c[counter_index(1, Family::Ipv4, Direction::Inbound, Counter::Completed) as usize] = 140;
        c[counter_index(1, Family::Ipv4, Direction::Inbound, Counter::SynAck) as usize] = 100;
        w.push(t0 + Duration::from_secs(10), c, Duration::from_secs(60));
        assert_eq!(w.ratios(key), (0.5, 1.0));
        assert_eq!(w.inbound_totals(), (100, 50));
    }
}

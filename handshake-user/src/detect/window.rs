//! Counter samples, one per scan, and their increase over a trailing
//! window: the ratio gauges (--ratio-window) and the detector
//! (--detector.window) both read it. Time is a nanosecond count: the
//! kernel's monotonic clock live, the capture's clock in replay.
//!
//! While a window fills (after a start) its increase is taken over the span
//! actually covered, and rates divide by that span, not by the nominal
//! window: a fresh agent does not under-read.
use std::collections::VecDeque;

use handshake_common::{
    counters::{Counter, Direction, Family, IFACE_SLOTS, counter_index},
    listener::ListenerCounters,
};

use crate::{detector::PortWindow, scan::SeriesKey};

#[derive(Debug)]
struct Sample {
    t_ns: u64,
    counters: Vec<u64>,
    /// Per-port funnels; emptied once older than the short window, which is
    /// the only one that reads them.
    listeners: Vec<(u16, ListenerCounters)>,
    /// The kernel's SyncookiesSent (0 where it cannot be read).
    syncookies_sent: u64,
}

/// Increase of the counters between two samples.
#[derive(Debug, Clone, Copy)]
pub struct Span<'a> {
    first: &'a Sample,
    last: &'a Sample,
}

impl Span<'_> {
    pub fn seconds(&self) -> f64 {
        self.last.t_ns.saturating_sub(self.first.t_ns) as f64 / 1e9
    }

    /// Increase of one counter of one series.
    pub fn delta(&self, key: SeriesKey, counter: Counter) -> u64 {
        let i = counter_index(key.0, key.1, key.2, counter) as usize;
        let at = |s: &Sample| s.counters.get(i).copied().unwrap_or(0);
        at(self.last).saturating_sub(at(self.first))
    }

    pub fn syncookies_sent(&self) -> u64 {
        self.last
            .syncookies_sent
            .saturating_sub(self.first.syncookies_sent)
    }

    /// Increase of a counter, inbound, over every interface and family.
    pub fn inbound(&self, counter: Counter) -> u64 {
        (0..IFACE_SLOTS)
            .flat_map(|slot| Family::ALL.map(|f| (slot, f, Direction::Inbound)))
            .map(|key| self.delta(key, counter))
            .sum()
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

    /// Each port's funnel increase (ports newly tracked count from zero:
    /// their slot was zeroed when they got it).
    pub fn ports(&self) -> Vec<PortWindow> {
        self.last
            .listeners
            .iter()
            .map(|(port, now)| {
                let before = self
                    .first
                    .listeners
                    .iter()
                    .find(|(p, _)| p == port)
                    .map(|(_, c)| *c)
                    .unwrap_or_default();
                let sub = |a: u64, b: u64| a.saturating_sub(b);
                PortWindow {
                    port: *port,
                    delta: ListenerCounters {
                        attempts: sub(now.attempts, before.attempts),
                        synack: sub(now.synack, before.synack),
                        completed: sub(now.completed, before.completed),
                        rejected: sub(now.rejected, before.rejected),
                        aborted: sub(now.aborted, before.aborted),
                    },
                }
            })
            .collect()
    }
}

/// Samples covering the longer of two windows.
#[derive(Debug)]
pub struct CounterWindow {
    samples: VecDeque<Sample>,
    long_ns: u64,
    short_ns: u64,
}

impl CounterWindow {
    /// `long`: the longest window read; `short`: the window that reads
    /// per-port funnels.
    pub fn new(long: std::time::Duration, short: std::time::Duration) -> Self {
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            samples: VecDeque::new(),
            long_ns: ns(long.max(short)),
            short_ns: ns(short),
        }
    }

    /// Adds a sample; keeps one at or before the long window's start.
    pub fn push(
        &mut self,
        t_ns: u64,
        counters: Vec<u64>,
        listeners: Vec<(u16, ListenerCounters)>,
        syncookies_sent: u64,
    ) {
        self.samples.push_back(Sample {
            t_ns,
            counters,
            listeners,
            syncookies_sent,
        });
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|s| t_ns.saturating_sub(s.t_ns) >= self.long_ns)
        {
            self.samples.pop_front();
        }
        // Only the short window reads per-port funnels: let go of older ones
        // (but the one at the short window's start).
        let keep_from = t_ns.saturating_sub(self.short_ns);
        let n = self.samples.len();
        for i in 0..n.saturating_sub(1) {
            let next_before = self.samples.get(i + 1).is_some_and(|s| s.t_ns <= keep_from);
            match self.samples.get_mut(i) {
                Some(s) if next_before && !s.listeners.is_empty() => s.listeners = Vec::new(),
                _ => {}
            }
        }
    }

    /// The increase over the last `window_ns`: from the newest sample at or
    /// before its start (or the oldest, while the window fills) to the last.
    pub fn span(&self, window_ns: u64) -> Option<Span<'_>> {
        let last = self.samples.back()?;
        let start = last.t_ns.saturating_sub(window_ns);
        let first = self
            .samples
            .iter()
            .rev()
            .find(|s| s.t_ns <= start)
            .or(self.samples.front())?;
        Some(Span { first, last })
    }

    pub fn long(&self) -> Option<Span<'_>> {
        self.span(self.long_ns)
    }

    pub fn short(&self) -> Option<Span<'_>> {
        self.span(self.short_ns)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use handshake_common::counters::COUNTERS_LEN;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn counters(attempts: u64, completed: u64, synack: u64) -> Vec<u64> {
        let mut c = vec![0u64; COUNTERS_LEN as usize];
        let at = |k| counter_index(1, Family::Ipv4, Direction::Inbound, k) as usize;
        c[at(Counter::Attempts)] = attempts;
        c[at(Counter::Completed)] = completed;
        c[at(Counter::SynAck)] = synack;
        c
    }

    fn funnel(attempts: u64, rejected: u64) -> Vec<(u16, ListenerCounters)> {
        vec![(
            8080,
            ListenerCounters {
                attempts,
                rejected,
                ..ListenerCounters::default()
            },
        )]
    }

    #[test]
    fn ratios_use_deltas_over_the_long_window() {
        let key = (1, Family::Ipv4, Direction::Inbound);
        let mut w = CounterWindow::new(Duration::from_secs(60), Duration::from_secs(5));
        w.push(0, counters(100, 90, 0), vec![], 0);
        assert!(
            w.long().expect("a sample").ratios(key).0.is_nan(),
            "one sample: no window yet"
        );
        w.push(10 * S, counters(200, 140, 100), vec![], 0);
        let span = w.long().expect("two samples");
        assert_eq!(span.ratios(key), (0.5, 1.0));
        assert_eq!(span.inbound(Counter::Attempts), 100);
        assert_eq!(span.inbound(Counter::Completed), 50);
        assert!((span.seconds() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_filling_window_divides_by_the_span_it_covers() {
        let mut w = CounterWindow::new(Duration::from_secs(60), Duration::from_secs(5));
        for t in 0..=40 {
            w.push(t * S, counters(10 * t, 10 * t, 10 * t), vec![], 0);
        }
        let span = w.long().expect("samples");
        assert!((span.seconds() - 40.0).abs() < 1e-9);
        assert_eq!(span.inbound(Counter::Attempts), 400, "10/s, not 400/60");
    }

    #[test]
    fn the_short_window_reads_per_port_funnels() {
        let mut w = CounterWindow::new(Duration::from_secs(60), Duration::from_secs(5));
        for t in 0..=20u64 {
            // 8080 refuses everything from t = 10 s on, at 1/s.
            let rejected = t.saturating_sub(10);
            w.push(t * S, counters(t, 0, 0), funnel(t, rejected), 0);
        }
        let span = w.short().expect("samples");
        assert!((span.seconds() - 5.0).abs() < 1e-9);
        assert_eq!(
            span.ports(),
            vec![PortWindow {
                port: 8080,
                delta: ListenerCounters {
                    attempts: 5,
                    rejected: 5,
                    ..ListenerCounters::default()
                }
            }]
        );
        // Samples older than the short window dropped their funnels; the
        // long window still spans 20 s.
        assert!((w.long().expect("samples").seconds() - 20.0).abs() < 1e-9);
        assert_eq!(
            w.samples.iter().filter(|s| !s.listeners.is_empty()).count(),
            6
        );
    }
}

//! A built-in detector for operators without alert rules yet: one
//! structured warning when a condition has held for `--detector.for`, one
//! all-clear when it has been gone as long. Hysteresis keeps a value that
//! hovers at the threshold from flapping. It names the top listener ports
//! and source prefixes in the log line, never in a label.
use std::time::{Duration, Instant};

use crate::scan::Snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Inbound half-open handshakes above the threshold.
    HalfOpenBuildup,
    /// Completion ratio below the threshold while SYNs arrive at a real rate.
    CompletionCollapse,
}

impl Condition {
    pub const ALL: [Self; 2] = [Self::HalfOpenBuildup, Self::CompletionCollapse];

    pub const fn label(self) -> &'static str {
        match self {
            Self::HalfOpenBuildup => "half_open_buildup",
            Self::CompletionCollapse => "completion_collapse",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub half_open: u64,
    pub completion_ratio: f64,
    pub min_syn_rate: f64,
    pub hold: Duration,
}

/// One condition's state: firing or not, and since when the raw signal has
/// disagreed with that.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    firing: bool,
    pending_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Fired,
    Resolved,
}

impl State {
    /// `raise`: the signal calls for firing; `clear`: it calls for clearing
    /// (between the two, hysteresis: keep the current state).
    fn step(
        &mut self,
        raise: bool,
        clear: bool,
        now: Instant,
        hold: Duration,
    ) -> Option<Transition> {
        let wants_change = if self.firing { clear } else { raise };
        if !wants_change {
            self.pending_since = None;
            return None;
        }
        let since = *self.pending_since.get_or_insert(now);
        if now.duration_since(since) < hold {
            return None;
        }
        self.firing = !self.firing;
        self.pending_since = None;
        Some(if self.firing {
            Transition::Fired
        } else {
            Transition::Resolved
        })
    }
}

#[derive(Debug)]
pub struct Detector {
    thresholds: Thresholds,
    states: [State; 2],
}

/// Inputs of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    pub inbound_half_open: u64,
    /// Inbound attempts per second over the ratio window.
    pub syn_rate: f64,
    /// Inbound completion ratio over the window (NaN: no attempts).
    pub completion_ratio: f64,
}

impl Detector {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            states: [State::default(); 2],
        }
    }

    pub fn firing(&self, c: Condition) -> bool {
        self.states[c as usize].firing
    }

    /// Evaluates both conditions; returns the transitions that happened.
    pub fn evaluate(&mut self, s: Signals, now: Instant) -> Vec<(Condition, Transition)> {
        let t = self.thresholds;
        let mut out = Vec::new();
        // Fire at the threshold, clear below 80 % of it.
        let raise = s.inbound_half_open >= t.half_open;
        let clear = (s.inbound_half_open as f64) < t.half_open as f64 * 0.8;
        if let Some(tr) =
            self.states[Condition::HalfOpenBuildup as usize].step(raise, clear, now, t.hold)
        {
            out.push((Condition::HalfOpenBuildup, tr));
        }
        // Judged only at a real SYN rate; clears 0.1 above the threshold, or
        // when the rate falls to half the minimum.
        let rated = s.syn_rate >= t.min_syn_rate && !s.completion_ratio.is_nan();
        let raise = rated && s.completion_ratio < t.completion_ratio;
        let clear = s.syn_rate < t.min_syn_rate * 0.5
            || (rated && s.completion_ratio >= t.completion_ratio + 0.1);
        if let Some(tr) =
            self.states[Condition::CompletionCollapse as usize].step(raise, clear, now, t.hold)
        {
            out.push((Condition::CompletionCollapse, tr));
        }
        out
    }
}

/// The one log line for a transition, as key=value pairs.
pub fn report(c: Condition, t: Transition, s: &Signals, snap: &Snapshot) -> String {
    let ports: Vec<String> = snap
        .top_ports
        .iter()
        .map(|(p, n)| format!("{p}:{n}"))
        .collect();
    let sources: Vec<String> = snap
        .top_sources
        .iter()
        .map(|(p, n)| format!("{p}:{n}"))
        .collect();
    format!(
        "detector condition={} state={} inbound_half_open={} syn_rate={:.1} completion_ratio={:.3} top_ports={} top_sources={}",
        c.label(),
        if t == Transition::Fired {
            "firing"
        } else {
            "resolved"
        },
        s.inbound_half_open,
        s.syn_rate,
        s.completion_ratio,
        if ports.is_empty() {
            "-".to_owned()
        } else {
            ports.join(",")
        },
        if sources.is_empty() {
            "-".to_owned()
        } else {
            sources.join(",")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> Detector {
        Detector::new(Thresholds {
            half_open: 100,
            completion_ratio: 0.5,
            min_syn_rate: 10.0,
            hold: Duration::from_secs(10),
        })
    }

    fn sig(half_open: u64, rate: f64, ratio: f64) -> Signals {
        Signals {
            inbound_half_open: half_open,
            syn_rate: rate,
            completion_ratio: ratio,
        }
    }

    #[test]
    fn fires_after_hold_and_clears_with_hysteresis() {
        let mut d = detector();
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        assert!(d.evaluate(sig(150, 0.0, f64::NAN), s(0)).is_empty());
        assert!(
            d.evaluate(sig(150, 0.0, f64::NAN), s(9)).is_empty(),
            "not sustained yet"
        );
        assert_eq!(
            d.evaluate(sig(150, 0.0, f64::NAN), s(10)),
            vec![(Condition::HalfOpenBuildup, Transition::Fired)]
        );
        assert!(d.firing(Condition::HalfOpenBuildup));
        // 90 is under the threshold but above 80 %: stays firing.
        assert!(d.evaluate(sig(90, 0.0, f64::NAN), s(30)).is_empty());
        assert!(d.evaluate(sig(90, 0.0, f64::NAN), s(50)).is_empty());
        assert!(d.evaluate(sig(50, 0.0, f64::NAN), s(51)).is_empty());
        assert_eq!(
            d.evaluate(sig(50, 0.0, f64::NAN), s(61)),
            vec![(Condition::HalfOpenBuildup, Transition::Resolved)]
        );
    }

    #[test]
    fn a_blip_does_not_fire() {
        let mut d = detector();
        let t0 = Instant::now();
        d.evaluate(sig(150, 0.0, f64::NAN), t0);
        d.evaluate(sig(10, 0.0, f64::NAN), t0 + Duration::from_secs(5));
        assert!(
            d.evaluate(sig(150, 0.0, f64::NAN), t0 + Duration::from_secs(11))
                .is_empty()
        );
    }

    #[test]
    fn ratio_collapse_needs_a_real_syn_rate() {
        let mut d = detector();
        let t0 = Instant::now();
        for n in 0..=20 {
            assert!(
                d.evaluate(sig(0, 2.0, 0.0), t0 + Duration::from_secs(n))
                    .is_empty(),
                "2 SYN/s is below the minimum"
            );
        }
        d.evaluate(sig(0, 50.0, 0.1), t0 + Duration::from_secs(30));
        let fired = d.evaluate(sig(0, 50.0, 0.1), t0 + Duration::from_secs(40));
        assert_eq!(
            fired,
            vec![(Condition::CompletionCollapse, Transition::Fired)]
        );
    }
}

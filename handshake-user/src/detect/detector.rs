//! A built-in detector for operators without alert rules yet: one
//! structured warning when a condition has held for `--detector.for`, one
//! all-clear when it has been gone as long. Rates and ratios are taken over
//! the last `--detector.window` of counter samples (the span actually
//! covered, so a window still filling does not under-read). Hysteresis keeps
//! a value that hovers at a threshold from flapping. Ports and source
//! prefixes are named in the log line, never in a label.
//!
//! Time is a plain nanosecond count (the kernel's monotonic clock live, the
//! capture's clock in `replay`), so the same detector runs on both.
use std::{fmt::Write as _, time::Duration};

use anyhow::{Result, ensure};
use handshake_common::listener::{ListenerCounters, OTHER_PORT};

use crate::scan::Snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Inbound half-open handshakes above the threshold, and still building.
    HalfOpenBuildup,
    /// Of the SYNs not refused, too few complete, at a real attempt rate.
    CompletionCollapse,
    /// A known listener's port answers most SYNs with a RST: its service died.
    ListenerRefusing,
    /// A known listener's port answers most SYNs with nothing: hung, full
    /// queues, or a firewall dropping.
    ListenerNotAnswering,
    /// SYNs refused on ports nobody listens on, at a real rate: a scan.
    ClosedPortScan,
    /// The kernel keeps sending SYN cookies: a SYN queue overflows.
    SynCookies,
    /// A known listener's accept queue fills: the application does not
    /// accept (seen before the kernel starts dropping SYNs).
    ListenerNotAccepting,
}

impl Condition {
    pub const ALL: [Self; 7] = [
        Self::HalfOpenBuildup,
        Self::CompletionCollapse,
        Self::ListenerRefusing,
        Self::ListenerNotAnswering,
        Self::ClosedPortScan,
        Self::SynCookies,
        Self::ListenerNotAccepting,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Self::HalfOpenBuildup => "half_open_buildup",
            Self::CompletionCollapse => "completion_collapse",
            Self::ListenerRefusing => "listener_refusing",
            Self::ListenerNotAnswering => "listener_not_answering",
            Self::ClosedPortScan => "closed_port_scan",
            Self::SynCookies => "syn_cookies",
            Self::ListenerNotAccepting => "listener_not_accepting",
        }
    }
}

/// The detector's settings (`--detector.*`).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub half_open: u64,
    pub completion_ratio: f64,
    pub min_syn_rate: f64,
    pub hold: Duration,
    pub window: Duration,
    /// `--handshake-timeout`: how long a stalled handshake stays half-open,
    /// so what the current inflow of stalled handshakes will add up to.
    pub timeout: Duration,
}

impl Thresholds {
    /// Checks the values an operator can give; one line on what is wrong.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.half_open >= 1,
            "--detector.half-open-threshold must be at least 1"
        );
        ensure!(
            self.completion_ratio > 0.0 && self.completion_ratio <= 1.0,
            "--detector.completion-ratio must be in (0, 1], got {}",
            self.completion_ratio
        );
        ensure!(
            self.min_syn_rate.is_finite() && self.min_syn_rate > 0.0,
            "--detector.min-syn-rate must be a positive number of attempts per second, got {}",
            self.min_syn_rate
        );
        ensure!(
            self.window >= Duration::from_secs(1) && self.window <= Duration::from_secs(3600),
            "--detector.window must be between 1s and 1h"
        );
        ensure!(
            self.hold <= Duration::from_secs(3600),
            "--detector.for must be at most 1h"
        );
        Ok(())
    }
}

/// Fewest events in the window for a port's share to be judged.
pub const MIN_PORT_EVENTS: u64 = 2;
/// Connections waiting for accept() that mean an application is not
/// accepting (or half its backlog, when that is less): a healthy one keeps
/// its queue near empty.
pub const ACCEPT_QUEUE_STUCK: u64 = 16;

/// Whether `q` holds as many as [`ACCEPT_QUEUE_STUCK`] (or half its limit,
/// and at least 2), scaled by `part` for the clear test.
pub fn accept_queue_stuck(q: &crate::sockdiag::AcceptQueue, part: f64) -> bool {
    let n = q.queued as f64;
    n >= ACCEPT_QUEUE_STUCK as f64 * part || (q.queued >= 2 && n * 2.0 >= q.limit as f64 * part)
}

/// One port's funnel over the window (port 0: every untracked port).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortWindow {
    pub port: u16,
    pub delta: ListenerCounters,
}

impl PortWindow {
    /// SYNs answered by neither a SYN-ACK nor a RST.
    pub fn unanswered(&self) -> u64 {
        let d = &self.delta;
        d.attempts.saturating_sub(d.synack + d.rejected)
    }
}

/// Inputs of one evaluation.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Seconds the window actually spans (less than --detector.window while
    /// it fills after a start).
    pub span_s: f64,
    pub inbound_half_open: u64,
    /// Inbound half-open handshakes whose SYN came within the window.
    pub young_half_open: u64,
    /// Inbound, every interface and family, over the window.
    pub attempts: u64,
    pub completed: u64,
    pub rejected: u64,
    /// Per tracked listener port, and port 0 (untracked), over the window.
    pub ports: Vec<PortWindow>,
    /// SYN cookies the kernel sent over the window (its own counter; none
    /// in replay).
    pub syncookies_sent: u64,
    /// Accept queues of the tracked listeners, now (none in replay).
    pub accept_queues: Vec<(u16, crate::sockdiag::AcceptQueue)>,
}

impl Signals {
    fn per_s(&self, n: u64) -> f64 {
        if self.span_s > 0.0 {
            n as f64 / self.span_s
        } else {
            0.0
        }
    }

    /// SYNs not refused: the ones a listener took on.
    pub fn answered(&self) -> u64 {
        self.attempts.saturating_sub(self.rejected)
    }

    pub fn syn_rate(&self) -> f64 {
        self.per_s(self.attempts)
    }

    /// Completed / attempts not refused over the window; NaN with none.
    pub fn completion_ratio(&self) -> f64 {
        match self.answered() {
            0 => f64::NAN,
            n => self.completed as f64 / n as f64,
        }
    }

    /// Half-open handshakes the present inflow of stalled ones adds up to
    /// over a handshake timeout.
    pub fn projected_half_open(&self, timeout: Duration) -> f64 {
        self.per_s(self.young_half_open) * timeout.as_secs_f64()
    }

    fn other(&self) -> PortWindow {
        self.ports
            .iter()
            .find(|p| p.port == OTHER_PORT)
            .copied()
            .unwrap_or_default()
    }

    /// Tracked ports whose `count` is at least `share` of their attempts
    /// (and [`MIN_PORT_EVENTS`]), most first.
    pub fn ports_where(&self, count: impl Fn(&PortWindow) -> u64, share: f64) -> Vec<(u16, u64)> {
        let mut out: Vec<(u16, u64)> = self
            .ports
            .iter()
            .filter(|p| p.port != OTHER_PORT)
            .filter_map(|p| {
                let n = count(p);
                (n >= MIN_PORT_EVENTS && n as f64 >= share * p.delta.attempts as f64)
                    .then_some((p.port, n))
            })
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// One condition's state: firing or not, and since when the raw signal has
/// disagreed with that.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    firing: bool,
    pending_since: Option<u64>,
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
        now_ns: u64,
        hold: Duration,
    ) -> Option<Transition> {
        let wants_change = if self.firing { clear } else { raise };
        if !wants_change {
            self.pending_since = None;
            return None;
        }
        let since = *self.pending_since.get_or_insert(now_ns);
        if u128::from(now_ns.saturating_sub(since)) < hold.as_nanos() {
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
    states: [State; Condition::ALL.len()],
}

impl Detector {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            states: [State::default(); Condition::ALL.len()],
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    pub fn firing(&self, c: Condition) -> bool {
        self.states[c as usize].firing
    }

    /// (raise, clear) of each condition for these signals.
    fn judge(&self, c: Condition, s: &Signals) -> (bool, bool) {
        let t = &self.thresholds;
        match c {
            Condition::HalfOpenBuildup => {
                // Fires while handshakes keep stalling; clears once they stop
                // (what is already half-open then only waits to time out) or
                // the count falls below 80 % of the threshold.
                let n = s.inbound_half_open as f64;
                let building = s.projected_half_open(t.timeout) >= t.half_open as f64 * 0.5;
                (
                    n >= t.half_open as f64 && building,
                    n < t.half_open as f64 * 0.8 || !building,
                )
            }
            Condition::CompletionCollapse => {
                let rate = s.per_s(s.answered());
                let ratio = s.completion_ratio();
                let rated = rate >= t.min_syn_rate && !ratio.is_nan();
                (
                    rated && ratio < t.completion_ratio,
                    ratio.is_nan()
                        || rate < t.min_syn_rate * 0.5
                        || ratio >= (t.completion_ratio + 0.1).min(1.0),
                )
            }
            Condition::ListenerRefusing => (
                !s.ports_where(|p| p.delta.rejected, 0.5).is_empty(),
                s.ports_where(|p| p.delta.rejected, 0.3).is_empty(),
            ),
            Condition::ListenerNotAnswering => (
                !s.ports_where(PortWindow::unanswered, 0.5).is_empty(),
                s.ports_where(PortWindow::unanswered, 0.3).is_empty(),
            ),
            Condition::ClosedPortScan => {
                let rate = s.per_s(s.other().delta.rejected);
                (rate >= t.min_syn_rate, rate < t.min_syn_rate * 0.5)
            }
            Condition::SynCookies => (s.syncookies_sent > 0, s.syncookies_sent == 0),
            Condition::ListenerNotAccepting => (
                s.accept_queues
                    .iter()
                    .any(|(_, q)| accept_queue_stuck(q, 1.0)),
                !s.accept_queues
                    .iter()
                    .any(|(_, q)| accept_queue_stuck(q, 0.25)),
            ),
        }
    }

    /// Evaluates every condition at `now_ns`; returns the transitions.
    pub fn evaluate(&mut self, s: &Signals, now_ns: u64) -> Vec<(Condition, Transition)> {
        let mut out = Vec::new();
        for c in Condition::ALL {
            let (raise, clear) = self.judge(c, s);
            let hold = self.thresholds.hold;
            if let Some(tr) = self.states[c as usize].step(raise, clear, now_ns, hold) {
                out.push((c, tr));
            }
        }
        out
    }
}

fn join(items: &[(String, u64)]) -> String {
    if items.is_empty() {
        return "-".to_owned();
    }
    items
        .iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn port_name(port: u16) -> String {
    if port == OTHER_PORT {
        "other".to_owned()
    } else {
        port.to_string()
    }
}

/// The ports a condition is about, ranked by the failures of its kind.
fn ports_for(c: Condition, s: &Signals, snap: &Snapshot) -> (&'static str, Vec<(String, u64)>) {
    let ranked = |count: fn(&PortWindow) -> u64| {
        let mut v: Vec<(u16, u64)> = s
            .ports
            .iter()
            .map(|p| (p.port, count(p)))
            .filter(|(_, n)| *n > 0)
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(5);
        v.into_iter().map(|(p, n)| (port_name(p), n)).collect()
    };
    match c {
        Condition::HalfOpenBuildup | Condition::CompletionCollapse | Condition::SynCookies => (
            "half_open",
            snap.top_ports
                .iter()
                .map(|(p, n)| (p.to_string(), *n))
                .collect(),
        ),
        Condition::ListenerRefusing | Condition::ClosedPortScan => {
            ("rejected", ranked(|p| p.delta.rejected))
        }
        Condition::ListenerNotAnswering => ("unanswered", ranked(PortWindow::unanswered)),
        Condition::ListenerNotAccepting => {
            let mut v: Vec<(u16, u64)> = s
                .accept_queues
                .iter()
                .filter(|(_, q)| q.queued > 0)
                .map(|(p, q)| (*p, q.queued))
                .collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(5);
            (
                "accept_queue",
                v.into_iter().map(|(p, n)| (port_name(p), n)).collect(),
            )
        }
    }
}

fn ratio_text(r: f64) -> String {
    if r.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{r:.3}")
    }
}

/// The one log line for a transition, as logfmt key=value pairs: what the
/// condition saw, each rate with its window, the ports ranked by the
/// failures the condition is about, and a summary of the sources.
pub fn report(
    c: Condition,
    tr: Transition,
    s: &Signals,
    snap: &Snapshot,
    t: &Thresholds,
) -> String {
    let w = format!("{}s", t.window.as_secs());
    let mut line = format!(
        "condition={} state={} inbound_half_open={} half_open_threshold={} \
         syn_rate_{w}={:.1} completion_ratio_{w}={} rejected_rate_{w}={:.1}",
        c.label(),
        if tr == Transition::Fired {
            "firing"
        } else {
            "resolved"
        },
        s.inbound_half_open,
        t.half_open,
        s.syn_rate(),
        ratio_text(s.completion_ratio()),
        s.per_s(s.rejected),
    );
    if c == Condition::SynCookies {
        let _ = write!(line, " syncookies_sent_{w}={}", s.syncookies_sent);
    }
    if s.span_s + 0.5 < t.window.as_secs_f64() {
        let _ = write!(line, " window_filled_s={:.0}", s.span_s);
    }
    let (kind, ports) = ports_for(c, s, snap);
    let _ = write!(line, " top_ports_by={kind} top_ports={}", join(&ports));
    line.push(' ');
    line.push_str(&snap.sources.fields());
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn thresholds() -> Thresholds {
        Thresholds {
            half_open: 100,
            completion_ratio: 0.5,
            min_syn_rate: 10.0,
            hold: Duration::from_secs(10),
            window: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
        }
    }

    fn sig(half_open: u64, young: u64, attempts: u64, completed: u64) -> Signals {
        Signals {
            span_s: 5.0,
            inbound_half_open: half_open,
            young_half_open: young,
            attempts,
            completed,
            ..Signals::default()
        }
    }

    fn port(port: u16, attempts: u64, synack: u64, completed: u64, rejected: u64) -> PortWindow {
        PortWindow {
            port,
            delta: ListenerCounters {
                attempts,
                synack,
                completed,
                rejected,
                aborted: 0,
            },
        }
    }

    fn run(d: &mut Detector, s: &Signals, from: u64, to: u64) -> Vec<(u64, Condition, Transition)> {
        (from..=to)
            .flat_map(|t| {
                d.evaluate(s, t * S)
                    .into_iter()
                    .map(move |(c, tr)| (t, c, tr))
            })
            .collect()
    }

    #[test]
    fn half_open_fires_after_hold_and_clears_when_the_build_up_stops() {
        let mut d = Detector::new(thresholds());
        // 150 half-open, 30 of them from the last 5 s: 6/s for 30 s is 180.
        let flood = sig(150, 30, 30, 0);
        assert!(run(&mut d, &flood, 0, 9).is_empty(), "not sustained yet");
        assert_eq!(
            run(&mut d, &flood, 10, 10),
            vec![(10, Condition::HalfOpenBuildup, Transition::Fired)]
        );
        // 90 is under the threshold but above 80 %, still building: stays.
        assert!(run(&mut d, &sig(90, 30, 30, 0), 11, 40).is_empty());
        // The flood stops: 150 are still half-open, waiting to time out, but
        // nothing new stalls. Resolved after the hold.
        let after = sig(150, 0, 7, 7);
        assert_eq!(
            run(&mut d, &after, 41, 60),
            vec![(51, Condition::HalfOpenBuildup, Transition::Resolved)]
        );
    }

    #[test]
    fn half_open_left_over_from_a_short_burst_does_not_fire() {
        let mut d = Detector::new(thresholds());
        assert!(run(&mut d, &sig(500, 0, 0, 0), 0, 30).is_empty());
    }

    #[test]
    fn a_blip_does_not_fire() {
        let mut d = Detector::new(thresholds());
        d.evaluate(&sig(150, 30, 30, 0), 0);
        d.evaluate(&sig(10, 0, 0, 0), 5 * S);
        assert!(d.evaluate(&sig(150, 30, 30, 0), 11 * S).is_empty());
    }

    #[test]
    fn ratio_collapse_needs_a_real_syn_rate() {
        let mut d = Detector::new(thresholds());
        // 2 attempts/s, none complete: below the minimum rate.
        assert!(run(&mut d, &sig(0, 0, 10, 0), 0, 30).is_empty());
        let fired = run(&mut d, &sig(0, 0, 250, 25), 31, 45);
        assert_eq!(
            fired,
            vec![(41, Condition::CompletionCollapse, Transition::Fired)]
        );
    }

    #[test]
    fn ratio_collapse_clears_on_a_healthy_ratio_below_the_minimum_rate() {
        // Between half the minimum rate and the minimum, a healthy ratio
        // must clear it (it once stayed firing there).
        let mut d = Detector::new(thresholds());
        run(&mut d, &sig(0, 0, 250, 25), 0, 20);
        assert!(d.firing(Condition::CompletionCollapse));
        let healthy = sig(0, 0, 49, 49); // 9.8/s, all complete
        let out = run(&mut d, &healthy, 21, 40);
        assert_eq!(
            out,
            vec![(31, Condition::CompletionCollapse, Transition::Resolved)]
        );
    }

    #[test]
    fn refusals_are_not_a_completion_collapse() {
        let mut d = Detector::new(thresholds());
        let mut s = sig(0, 0, 250, 0);
        s.rejected = 250;
        s.ports = vec![port(8080, 250, 0, 0, 250)];
        let out = run(&mut d, &s, 0, 20);
        assert_eq!(
            out,
            vec![(10, Condition::ListenerRefusing, Transition::Fired)]
        );
    }

    #[test]
    fn a_refusing_listener_at_one_per_second_fires_and_resolves() {
        let mut d = Detector::new(thresholds());
        let mut dead = sig(0, 0, 5, 0);
        dead.rejected = 5;
        dead.ports = vec![port(8080, 5, 0, 0, 5), port(22, 4, 4, 4, 0)];
        assert_eq!(
            run(&mut d, &dead, 0, 15),
            vec![(10, Condition::ListenerRefusing, Transition::Fired)]
        );
        let mut back = sig(0, 0, 5, 5);
        back.ports = vec![port(8080, 5, 5, 5, 0)];
        assert_eq!(
            run(&mut d, &back, 16, 30),
            vec![(26, Condition::ListenerRefusing, Transition::Resolved)]
        );
    }

    #[test]
    fn too_few_refusals_are_not_judged() {
        let mut d = Detector::new(thresholds());
        let mut s = sig(0, 0, 1, 0);
        s.rejected = 1;
        s.ports = vec![port(8080, 1, 0, 0, 1)];
        assert!(run(&mut d, &s, 0, 30).is_empty());
    }

    #[test]
    fn a_listener_that_answers_nothing_fires() {
        let mut d = Detector::new(thresholds());
        let mut s = sig(35, 35, 35, 0);
        s.ports = vec![port(8080, 35, 0, 0, 0)];
        let out = run(&mut d, &s, 0, 12);
        assert_eq!(
            out,
            vec![(10, Condition::ListenerNotAnswering, Transition::Fired)]
        );
    }

    #[test]
    fn refusals_on_untracked_ports_at_a_real_rate_are_a_scan() {
        let mut d = Detector::new(thresholds());
        let mut s = sig(0, 0, 500, 0);
        s.rejected = 500;
        s.ports = vec![port(OTHER_PORT, 500, 0, 0, 500)];
        assert_eq!(
            run(&mut d, &s, 0, 12),
            vec![(10, Condition::ClosedPortScan, Transition::Fired)]
        );
    }

    #[test]
    fn cookies_sent_throughout_the_hold_fire() {
        let mut d = Detector::new(thresholds());
        let mut s = sig(0, 0, 0, 0);
        s.syncookies_sent = 4;
        assert_eq!(
            run(&mut d, &s, 0, 12),
            vec![(10, Condition::SynCookies, Transition::Fired)]
        );
        assert_eq!(
            run(&mut d, &sig(0, 0, 0, 0), 13, 23),
            vec![(23, Condition::SynCookies, Transition::Resolved)]
        );
    }

    #[test]
    fn a_listener_whose_accept_queue_fills_is_not_accepting() {
        use crate::sockdiag::AcceptQueue;
        let mut d = Detector::new(thresholds());
        let mut s = sig(0, 0, 35, 35);
        s.accept_queues = vec![(
            8080,
            AcceptQueue {
                queued: 20,
                limit: 128,
            },
        )];
        assert_eq!(
            run(&mut d, &s, 0, 12),
            vec![(10, Condition::ListenerNotAccepting, Transition::Fired)]
        );
        // A small backlog: half of it is enough.
        let mut d = Detector::new(thresholds());
        s.accept_queues = vec![(
            8080,
            AcceptQueue {
                queued: 3,
                limit: 4,
            },
        )];
        assert_eq!(run(&mut d, &s, 0, 10).len(), 1);
        // A busy but healthy one keeps a few at a time.
        let mut d = Detector::new(thresholds());
        s.accept_queues = vec![(
            8080,
            AcceptQueue {
                queued: 5,
                limit: 4096,
            },
        )];
        assert!(run(&mut d, &s, 0, 30).is_empty());
    }

    #[test]
    fn thresholds_are_validated() {
        for bad in [5.0, f64::NAN, 0.0, -1.0] {
            let t = Thresholds {
                completion_ratio: bad,
                ..thresholds()
            };
            assert!(t.validate().is_err(), "{bad}");
        }
        let t = Thresholds {
            min_syn_rate: f64::INFINITY,
            ..thresholds()
        };
        assert!(t.validate().is_err());
        assert!(thresholds().validate().is_ok());
    }
}

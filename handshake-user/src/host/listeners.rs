//! The host's listening TCP ports, from /proc/net/tcp and tcp6: the ports
//! that get their own per-listener series when --listener-ports is not set,
//! and which of them keep it.
//!
//! Any local user can open listeners, so the set is bounded: at most
//! [`MAX_DISCOVERED`] ports at once. A port that stops listening keeps its
//! series while SYNs still arrive for it (a dead service is what the
//! refusal alert is for), and is let go once it has been closed and quiet
//! for [`RETIRE_AFTER_S`]; when a new listener finds every slot taken, the
//! closed port quiet the longest gives up its slot. Ports that churn open
//! and closed without traffic so never crowd out a real service.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
};

/// Most ports discovered automatically; the rest are counted as "other".
/// (The kernel map holds up to `MAX_LISTENERS`; operators can name more.)
pub const MAX_DISCOVERED: usize = 256;
/// A closed port with no SYN for this long loses its series.
pub const RETIRE_AFTER_S: u64 = 300;

/// TCP_LISTEN in /proc/net/tcp's `st` column.
const LISTEN: &str = "0A";

/// Ports of the sockets in LISTEN state in `table` (a /proc/net/tcp file).
pub fn parse(table: &str) -> BTreeSet<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            if state != LISTEN {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

/// Every listening port of this network namespace.
pub fn listening() -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(file) {
            ports.extend(parse(&text));
        }
    }
    ports.remove(&0);
    ports
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When it was last seen listening (s).
    listening_at: u64,
    /// Its attempts counter at the last look, and when it last moved.
    attempts: u64,
    active_at: u64,
}

/// What to change in the tracked set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub track: Vec<u16>,
    pub untrack: Vec<u16>,
    /// Listening ports left without a series of their own (every slot held
    /// by a listening or recently active port).
    pub untracked_listening: usize,
}

/// Which listening ports have a series of their own (the default mode).
#[derive(Debug)]
pub struct PortTracker {
    cap: usize,
    seen: BTreeMap<u16, Seen>,
}

impl PortTracker {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: BTreeMap::new(),
        }
    }

    /// The changes at time `now_s`, given the ports tracked now, the ports
    /// listening now and each tracked port's attempts counter.
    pub fn plan(
        &mut self,
        now_s: u64,
        tracked: &[u16],
        listening: &BTreeSet<u16>,
        attempts: &BTreeMap<u16, u64>,
    ) -> Plan {
        let mut plan = Plan::default();
        self.seen.retain(|p, _| tracked.contains(p));
        for port in tracked {
            let n = attempts.get(port).copied().unwrap_or(0);
            let s = self.seen.entry(*port).or_insert(Seen {
                listening_at: now_s,
                attempts: n,
                active_at: now_s,
            });
            if listening.contains(port) {
                s.listening_at = now_s;
            }
            if n != s.attempts {
                s.attempts = n;
                s.active_at = now_s;
            }
        }
        let quiet_closed = |s: &Seen, for_s: u64| {
            now_s.saturating_sub(s.listening_at) >= for_s
                && now_s.saturating_sub(s.active_at) >= for_s
        };
        // Closed and quiet long enough: let go.
        let retire: Vec<u16> = self
            .seen
            .iter()
            .filter(|(_, s)| quiet_closed(s, RETIRE_AFTER_S))
            .map(|(p, _)| *p)
            .collect();
        for p in retire {
            self.seen.remove(&p);
            plan.untrack.push(p);
        }
        let new: Vec<u16> = listening
            .iter()
            .copied()
            .filter(|p| !self.seen.contains_key(p))
            .collect();
        for port in new {
            if self.seen.len() >= self.cap {
                // The closed port quiet the longest gives up its slot; one
                // that still gets SYNs (a dead service) keeps it.
                let victim = self
                    .seen
                    .iter()
                    .filter(|(p, s)| !listening.contains(*p) && quiet_closed(s, 1))
                    .min_by_key(|(p, s)| (s.active_at, s.listening_at, **p))
                    .map(|(p, _)| *p);
                let Some(victim) = victim else {
                    plan.untracked_listening += 1;
                    continue;
                };
                self.seen.remove(&victim);
                plan.untrack.push(victim);
            }
            self.seen.insert(
                port,
                Seen {
                    listening_at: now_s,
                    attempts: 0,
                    active_at: now_s,
                },
            );
            plan.track.push(port);
        }
        plan
    }
}

/// Applies `tracker`'s plan for now to the probe (the default mode).
pub fn follow(
    tracker: &mut PortTracker,
    probe: &mut crate::probe::Probe,
    now_s: u64,
) -> anyhow::Result<()> {
    let attempts: BTreeMap<u16, u64> = probe
        .listeners()?
        .into_iter()
        .map(|(p, c)| (p, c.attempts))
        .collect();
    let plan = tracker.plan(now_s, &probe.listener_ports(), &listening(), &attempts);
    for port in &plan.untrack {
        probe.untrack_listener_port(*port)?;
    }
    probe.track_listener_ports(&plan.track)?;
    if plan.untracked_listening > 0 {
        log::debug!(
            "{} listening ports counted as port=\"other\": all {MAX_DISCOVERED} series are held",
            plan.untracked_listening
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: &[u16]) -> BTreeSet<u16> {
        ports.iter().copied().collect()
    }

    /// Applies a plan to the tracked list, as the agent does.
    fn apply(tracked: &mut Vec<u16>, plan: &Plan) {
        tracked.retain(|p| !plan.untrack.contains(p));
        tracked.extend(&plan.track);
    }

    #[test]
    fn churning_listeners_never_pass_the_cap_nor_crowd_out_a_real_service() {
        let mut t = PortTracker::new(4);
        let mut tracked = Vec::new();
        let none = BTreeMap::new();
        // Six listeners at once: four get a series.
        let plan = t.plan(
            0,
            &tracked,
            &set(&[1001, 1002, 1003, 1004, 1005, 1006]),
            &none,
        );
        assert_eq!(plan.track, vec![1001, 1002, 1003, 1004]);
        assert_eq!(plan.untracked_listening, 2);
        apply(&mut tracked, &plan);
        // They close; others open and close, round after round.
        for round in 1..20u16 {
            let open = set(&[2000 + round, 3000 + round]);
            let plan = t.plan(u64::from(round) * 10, &tracked, &open, &none);
            apply(&mut tracked, &plan);
            assert!(tracked.len() <= 4, "round {round}: {tracked:?}");
        }
        // A real service starts: it gets a series at once.
        let plan = t.plan(200, &tracked, &set(&[8080]), &none);
        assert_eq!(plan.track, vec![8080]);
        apply(&mut tracked, &plan);
        assert!(tracked.contains(&8080) && tracked.len() <= 4);
    }

    #[test]
    fn a_dead_service_that_still_gets_syns_keeps_its_series() {
        let mut t = PortTracker::new(2);
        let mut tracked = Vec::new();
        let plan = t.plan(0, &tracked, &set(&[8080, 22]), &BTreeMap::new());
        apply(&mut tracked, &plan);
        // 8080 dies; its clients keep trying. 22 stays up. A new listener
        // finds no slot: it does not take the dead service's.
        for (now, n) in [(10, 5), (20, 12), (400, 900)] {
            let attempts = BTreeMap::from([(8080, n), (22, 1)]);
            let plan = t.plan(now, &tracked, &set(&[22, 9999]), &attempts);
            assert!(plan.untrack.is_empty(), "{now}: {plan:?}");
            assert_eq!(plan.untracked_listening, 1);
        }
        // Quiet for 5 minutes: let go.
        let attempts = BTreeMap::from([(8080, 900), (22, 1)]);
        let plan = t.plan(700, &tracked, &set(&[22]), &attempts);
        assert_eq!(plan.untrack, vec![8080]);
    }

    #[test]
    fn listening_sockets_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:24E5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0100007F:24E5 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1\n";
        assert_eq!(parse(table).into_iter().collect::<Vec<_>>(), vec![22, 9445]);
    }
}

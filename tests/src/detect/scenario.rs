//! The detection scenarios: incidents that must page, benign events that
//! must not, each with its true interval, and what should fire.
//!
//! Every scenario runs in its own client and server namespaces: a server
//! on port 8080 (found by the agent's own listener discovery, default
//! flags), legitimate clients from the start (the agent is fresh: its first
//! minute is part of the score), the event from `start_s` to `end_s`, then
//! recovery until `total_s`.

/// The served port, as it appears in alert labels and detector lines.
pub const PORT: u16 = 8080;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// Spoofed SYNs at `rate` per second; with `pulse`, on for `.0` and off
    /// for `.1` seconds in turn.
    Flood {
        rate: f64,
        pulse: Option<(u64, u64)>,
    },
    /// The listener is closed: SYNs are refused.
    Dead,
    /// The listener stops accepting: its accept queue fills and SYNs go
    /// unanswered.
    Hung,
    /// Clients at `rate` per second, `delay_ms` away each way, to a listener
    /// with a small backlog: its SYN queue overflows and the kernel answers
    /// with cookies; every handshake still completes.
    SynQueueCookies { rate: f64, delay_ms: u32 },
    /// SYNs to closed ports at `rate` per second.
    ClosedPortScan { rate: f64 },
    /// The clients' rate goes to `rate`; all complete.
    FlashCrowd { rate: f64 },
    /// `loss_pct` of the frames are lost each way: SYNs and SYN-ACKs are
    /// retransmitted, handshakes still complete.
    Lossy { loss_pct: u32 },
    /// Clients `delay_ms` away each way, at `rate` per second (made by hand:
    /// this kernel has no netem).
    SlowClients { rate: f64, delay_ms: u32 },
    /// The listener is closed for the event's length, then back.
    Restart,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// True for an incident (must page), false for a benign event.
    pub incident: bool,
    pub event: Event,
    /// The legitimate clients' rate, connections per second.
    pub rate: f64,
    /// The server's listen backlog.
    pub backlog: i32,
    pub start_s: u64,
    pub end_s: u64,
    pub total_s: u64,
    /// Alerts of which at least one must fire (per-port ones with
    /// port="8080"); and others that may fire during the incident.
    pub expect: &'static [&'static str],
    pub allow: &'static [&'static str],
    /// The same for the built-in detector's conditions.
    pub detector_expect: &'static [&'static str],
    pub detector_allow: &'static [&'static str],
    /// Runs alone (floods at thousands of packets per second).
    pub heavy: bool,
    /// After the event: the listener is closed at `.0` and back at `.1`
    /// seconds, a second incident (the lab).
    pub then_dead: Option<(u64, u64)>,
    /// Also a real Prometheus with the shipped rules, scraping and
    /// evaluating every 5 s, queried for its alerts at the end.
    pub prometheus: bool,
}

impl Scenario {
    /// The incidents to score apart, each with the span of the recording
    /// that belongs to it: the scenario itself, or for the lab its flood
    /// and then its dead listener.
    pub fn parts(&self) -> Vec<(Scenario, f64, f64)> {
        let Some((dead, back)) = self.then_dead else {
            return vec![(self.clone(), 0.0, self.total_s as f64)];
        };
        let split = self.end_s + 180;
        vec![
            (
                Scenario {
                    name: "lab: flood",
                    total_s: dead,
                    then_dead: None,
                    ..self.clone()
                },
                0.0,
                dead as f64,
            ),
            (
                Scenario {
                    name: "lab: server killed",
                    about: "then the server is killed (RST) for 3 minutes, under 7/s",
                    event: Event::Dead,
                    start_s: dead,
                    end_s: back,
                    expect: &["TCPHandshakeListenerRefusing"],
                    allow: &[],
                    detector_expect: &["listener_refusing"],
                    detector_allow: &[],
                    then_dead: None,
                    ..self.clone()
                },
                split as f64,
                self.total_s as f64,
            ),
        ]
    }
}

const BASE: u64 = 60;
const INCIDENT: u64 = 210;
const RECOVERY: u64 = 210;
const BENIGN: u64 = 180;
const AFTER: u64 = 120;

const FLOOD_RULES: &[&str] = &[
    "TCPHandshakeHalfOpenBuildup",
    "TCPHandshakeCompletionCollapse",
];
const FLOOD_SIDE: &[&str] = &["TCPHandshakeSynCookies", "TCPHandshakeFlowTableSaturated"];
const FLOOD_DETECTOR: &[&str] = &["half_open_buildup", "completion_collapse"];

fn incident(
    name: &'static str,
    about: &'static str,
    event: Event,
    expect: &'static [&'static str],
    detector_expect: &'static [&'static str],
) -> Scenario {
    Scenario {
        name,
        about,
        incident: true,
        event,
        rate: 7.0,
        backlog: 128,
        start_s: BASE,
        end_s: BASE + INCIDENT,
        total_s: BASE + INCIDENT + RECOVERY,
        expect,
        allow: &[],
        detector_expect,
        detector_allow: &[],
        heavy: false,
        then_dead: None,
        prometheus: false,
    }
}

fn benign(name: &'static str, about: &'static str, event: Event) -> Scenario {
    Scenario {
        name,
        about,
        incident: false,
        event,
        rate: 7.0,
        backlog: 128,
        start_s: BASE,
        end_s: BASE + BENIGN,
        total_s: BASE + BENIGN + AFTER,
        expect: &[],
        allow: &[],
        detector_expect: &[],
        detector_allow: &[],
        heavy: false,
        then_dead: None,
        prometheus: false,
    }
}

fn flood(
    name: &'static str,
    about: &'static str,
    rate: f64,
    pulse: Option<(u64, u64)>,
) -> Scenario {
    Scenario {
        allow: FLOOD_SIDE,
        detector_allow: &["syn_cookies"],
        heavy: rate >= 1000.0,
        ..incident(
            name,
            about,
            Event::Flood { rate, pulse },
            FLOOD_RULES,
            FLOOD_DETECTOR,
        )
    }
}

/// Every scenario, in the order they are reported.
pub fn all() -> Vec<Scenario> {
    vec![
        flood(
            "flood_2k",
            "spoofed SYN flood, 2000/s, onto the served port",
            2000.0,
            None,
        ),
        flood("flood_10k", "spoofed SYN flood, 10000/s", 10_000.0, None),
        Scenario {
            expect: &["TCPHandshakeCompletionCollapse"],
            detector_expect: &["completion_collapse"],
            ..flood(
                "flood_low",
                "spoofed SYN flood, 25/s: half-open stays under the 1000 threshold",
                25.0,
                None,
            )
        },
        flood(
            "flood_pulse",
            "spoofed SYN flood, 2000/s, 20 s on and 40 s off",
            2000.0,
            Some((20, 40)),
        ),
        Scenario {
            rate: 1.0,
            ..incident(
                "dead_1",
                "the listener dies (RST) under 1 connection/s",
                Event::Dead,
                &["TCPHandshakeListenerRefusing"],
                &["listener_refusing"],
            )
        },
        Scenario {
            rate: 50.0,
            ..incident(
                "dead_50",
                "the listener dies (RST) under 50 connections/s",
                Event::Dead,
                &["TCPHandshakeListenerRefusing"],
                &["listener_refusing"],
            )
        },
        incident(
            "hung",
            "the listener stops accepting: accept queue full, SYNs dropped",
            Event::Hung,
            &[
                "TCPHandshakeListenerNotAccepting",
                "TCPHandshakeListenerNotAnswering",
            ],
            &["listener_not_accepting", "listener_not_answering"],
        ),
        Scenario {
            backlog: 4,
            ..incident(
                "syn_queue_cookies",
                "60 clients/s 100 ms away each way, to a backlog of 4: SYN cookies",
                Event::SynQueueCookies {
                    rate: 60.0,
                    delay_ms: 100,
                },
                &["TCPHandshakeSynCookies"],
                &["syn_cookies"],
            )
        },
        Scenario {
            then_dead: Some((480, 660)),
            end_s: 240,
            total_s: 780,
            prometheus: true,
            ..flood(
                "lab",
                "a real Prometheus (5 s scrape and evaluation, shipped rules): 7/s clients, a 2000/s spoofed flood for 3 minutes",
                2000.0,
                None,
            )
        },
        incident(
            "closed_port_scan",
            "SYNs to closed ports, 100/s",
            Event::ClosedPortScan { rate: 100.0 },
            &["TCPHandshakeClosedPortScan"],
            &["closed_port_scan"],
        ),
        benign(
            "flash_crowd",
            "10x the connection rate (70/s), all complete",
            Event::FlashCrowd { rate: 70.0 },
        ),
        benign(
            "lossy_path",
            "15 % loss each way: SYNs and SYN-ACKs retransmitted",
            Event::Lossy { loss_pct: 15 },
        ),
        benign(
            "slow_clients",
            "clients 800 ms away each way, 20 connections/s",
            Event::SlowClients {
                rate: 20.0,
                delay_ms: 800,
            },
        ),
        Scenario {
            end_s: BASE + 4,
            ..benign(
                "restart",
                "the service restarts: 4 s of RST",
                Event::Restart,
            )
        },
    ]
}

/// The scenarios of `cargo xtask detect --quick`.
pub const QUICK: &[&str] = &["flood_2k", "dead_1", "restart"];

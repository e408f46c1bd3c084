//! B4: answered handshakes surviving floods many times the table's size.
use super::*;

pub(crate) fn b4(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!(
        "B4 flood survival (BPF_PROG_TEST_RUN): real handshakes while 10x the table's capacity in random-source SYNs arrives"
    );
    let capacity = 16384usize;
    let flood: Vec<Vec<u8>> = distinct_clients(capacity * 10, false, false)
        .iter()
        .map(|c| syn(&c.clone().vlan(7), 1).build())
        .collect();
    let real: Vec<Packet> = (0..200u16)
        .map(|i| Packet::tcp(v4(1), 20000 + i, v4(2), 80))
        .collect();
    // A server answers a SYN at once; the client's final ACK comes one
    // round trip later, during which `wait` flood SYNs arrive. The last
    // case is the hard one: the SYN-ACK too comes only after the wait (a
    // slow server, or an outbound SYN to a far peer), so nothing marks the
    // real entry as used while the flood goes by.
    let budget = LoadOptions {
        flow_table_size: capacity as u32,
        syn_insert_budget: 16_384,
        ..LoadOptions::default()
    };
    let default = LoadOptions {
        flow_table_size: capacity as u32,
        ..LoadOptions::default()
    };
    let cases = [
        ("a quarter of the table", capacity / 4, false),
        ("the whole table", capacity, false),
        ("twice the table", 2 * capacity, false),
        ("the whole table", capacity, true),
    ];
    for (wait_label, wait, late_synack) in cases {
        for (label, options, graded) in [
            ("default (no insert budget)", default, !late_synack),
            ("--syn-insert-budget 16384", budget, false),
        ] {
            let mut fractions = Vec::new();
            for _ in 0..s.runs {
                let mut t = Tester::bench_with(&options);
                let every = flood.len() / real.len();
                let mut open: std::collections::VecDeque<(usize, &Packet)> =
                    std::collections::VecDeque::new();
                for (i, f) in flood.iter().enumerate() {
                    if i % every == 0 && i / every < real.len() {
                        let c = &real[i / every];
                        t.ingress(&syn(c, 5).build());
                        if !late_synack {
                            t.egress(&synack(c, 9, 6).build());
                        }
                        open.push_back((i, c));
                    }
                    t.ingress(f);
                    while open.front().is_some_and(|(at, _)| i - at >= wait) {
                        let (_, c) = open.pop_front().expect("open");
                        if late_synack {
                            t.egress(&synack(c, 9, 6).build());
                        }
                        t.ingress(&ack(c, 6, 10).build());
                    }
                }
                for (_, c) in open {
                    if late_synack {
                        t.egress(&synack(c, 9, 6).build());
                    }
                    t.ingress(&ack(c, 6, 10).build());
                }
                let c = t.counters();
                let completed = c.get(
                    handshake_common::counters::Family::Ipv4,
                    handshake_common::counters::Direction::Inbound,
                    Counter::Completed,
                );
                fractions.push(completed as f64 / real.len() as f64);
            }
            let f = median(&mut fractions);
            rows.push(Row {
                bench: "B4",
                case: format!(
                    "{label}, {} after {wait_label} in flood SYNs",
                    if late_synack {
                        "SYN-ACK and final ACK"
                    } else {
                        "final ACK"
                    }
                ),
                baseline: "-".to_owned(),
                ours: format!("{:.1} % completed", f * 100.0),
                figure: format!("{:.1} %", f * 100.0),
                goal: if graded {
                    ">= 99 %".to_owned()
                } else {
                    "(contrast)".to_owned()
                },
                verdict: if graded {
                    verdict(Some(f >= 0.99))
                } else {
                    "-"
                },
            });
            eprintln!(
                "  B4 {label}, wait {wait}, late SYN-ACK {late_synack}: {:.1} %",
                f * 100.0
            );
        }
    }
}

/// `n` half-open flows, distinct, as many as a fill may need.
pub(crate) fn half_open_flows(
    second_word: u32,
    syn_ns: u64,
) -> impl Iterator<Item = (FlowKey, FlowState)> {
    (0..u32::MAX).map(move |i| {
        let key = FlowKey::new(
            [i, second_word, 0, 0],
            [7, 0, 0, 0],
            (i % 60000) as u16,
            80,
            0,
        );
        (
            key,
            FlowState {
                syn_ns,
                client_isn: i,
                stage: Stage::SynSent as u8,
                ..FlowState::default()
            },
        )
    })
}

/// Fills the table to `n` flows (its whole capacity, for the B5 sizes).
pub(crate) fn fill_flows(t: &mut Tester, n: usize) {
    let now = handshake_user::run::monotonic_ns();
    assert_eq!(
        t.probe()
            .fill_flow_table(half_open_flows(1, now), n)
            .expect("fill"),
        n
    );
}

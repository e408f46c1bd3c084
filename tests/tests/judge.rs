//! `replay` against an independent reading of the same packets
//! (`tests/corpus/judge.py`: tshark's dissectors and a state machine of its
//! own), on captures these tests write: first one whose every number is
//! known by construction, which both must give; then seeded, generated
//! traffic where every handshake behaviour the monitor tells apart is
//! mixed and interleaved, where the two must agree counter for counter.
//! `cargo xtask corpus` runs the same comparison on public captures.
use std::{net::IpAddr, path::PathBuf, process::Command};

use handshake_tests::{
    agent::replay_json,
    capture::{Format, Record, Way, write},
    packet::{ACK, Packet, RST, SYN},
};
use serde_json::Value;

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;
/// The counters compared: the funnel first.
const COUNTERS: [&str; 13] = [
    "attempts",
    "synack",
    "completed",
    "rejected",
    "aborted",
    "retransmits_syn",
    "retransmits_synack",
    "duplicate_observations",
    "timeouts",
    "unsolicited_synack",
    "late_segments",
    "superseded",
    "invalid",
];

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hm-judge-{}-{name}", std::process::id()))
}

/// replay's counters, both directions summed, named as the judge names them.
fn replay_counts(path: &std::path::Path) -> Vec<(&'static str, u64)> {
    let (json, _) = replay_json(path, &[]);
    COUNTERS
        .iter()
        .map(|&name| {
            let total = ["inbound", "outbound"]
                .iter()
                .flat_map(|d| json[d].as_object().expect("direction").iter())
                .filter(|(k, _)| match name {
                    "timeouts" | "superseded" | "invalid" => k.starts_with(name),
                    _ => k.as_str() == name,
                })
                .map(|(_, v)| v.as_u64().unwrap_or(0))
                .sum();
            (name, total)
        })
        .collect()
}

fn judge_counts(path: &std::path::Path) -> Vec<(&'static str, u64)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/judge.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(path)
        .output()
        .expect("python3 runs the judge (cargo xtask setup installs tshark)");
    assert!(
        out.status.success(),
        "judge.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("judge JSON");
    COUNTERS
        .iter()
        .map(|&name| (name, json[name].as_u64().expect("judge counter")))
        .collect()
}

/// Segments of one test, in capture time.
#[derive(Default)]
struct Trace {
    records: Vec<Record>,
}

impl Trace {
    /// `p` sent by the client side (captured arriving) at `ts_ns`.
    fn client(&mut self, ts_ns: u64, p: Packet) {
        self.push(ts_ns, p, Way::In);
    }

    /// `p` sent by the server side (captured leaving) at `ts_ns`.
    fn server(&mut self, ts_ns: u64, p: Packet) {
        self.push(ts_ns, p, Way::Out);
    }

    fn push(&mut self, ts_ns: u64, p: Packet, way: Way) {
        self.records.push(Record {
            ts_ns,
            frame: p.build(),
            way,
        });
    }

    /// Written in capture-time order (a stable sort: segments of equal
    /// time keep the order they were pushed in).
    fn write(mut self, name: &str, format: Format) -> PathBuf {
        self.records.sort_by_key(|r| r.ts_ns);
        let path = tmp(name);
        write(&path, format, &self.records);
        path
    }
}

fn conn(n: u16) -> Packet {
    let client = IpAddr::from([198, 18, 1 + (n >> 8) as u8, n as u8]);
    Packet::tcp(client, 40000 + n, IpAddr::from([198, 18, 0, 2]), 80)
}

fn conn6(n: u16) -> Packet {
    let client = IpAddr::from([0x2001, 2, 0, 1, 0, 0, 0, n]);
    Packet::tcp(
        client,
        40000 + n,
        IpAddr::from([0x2001, 2, 0, 0, 0, 0, 0, 2]),
        443,
    )
}

/// A capture whose numbers are known by construction: each behaviour once.
#[test]
fn the_judge_and_replay_count_what_was_sent() {
    let t0 = 1_700_000_000 * S;
    let mut t = Trace::default();
    let (x, y) = (1000u32, 5000u32);
    // 1: complete, its SYN retransmitted once.
    let c = conn(1);
    t.client(t0, c.clone().flags(SYN).seq(x));
    t.client(t0 + S, c.clone().flags(SYN).seq(x));
    t.server(t0 + S + MS, c.reply().flags(SYN | ACK).seq(y).ack(x + 1));
    t.client(t0 + S + 2 * MS, c.clone().flags(ACK).seq(x + 1).ack(y + 1));
    // 2: refused, then the same SYN again 0.5 s later (a Windows retry):
    // one attempt, one retransmission, one rejection.
    let c = conn(2);
    t.client(t0, c.clone().flags(SYN).seq(x));
    t.server(t0 + MS, c.reply().flags(RST | ACK).seq(0).ack(x + 1));
    t.client(t0 + 500 * MS, c.clone().flags(SYN).seq(x));
    t.server(t0 + 501 * MS, c.reply().flags(RST | ACK).seq(0).ack(x + 1));
    // 3: the SYN-ACK captured 2 ms before its SYN, and carrying 10 bytes,
    // which the final ACK acknowledges: complete.
    let c = conn(3);
    t.server(t0, c.reply().flags(SYN | ACK).seq(y).ack(x + 1).payload(10));
    t.client(t0 + 2 * MS, c.clone().flags(SYN).seq(x));
    t.client(t0 + 3 * MS, c.clone().flags(ACK).seq(x + 1).ack(y + 11));
    // 4: the client resets in SYN-RECEIVED, 100 bytes into the window.
    let c = conn(4);
    t.client(t0, c.clone().flags(SYN).seq(x));
    t.server(t0 + MS, c.reply().flags(SYN | ACK).seq(y).ack(x + 1));
    t.client(t0 + 2 * MS, c.clone().flags(RST).seq(x + 101));
    // 5: never answered: a timeout, and a SYN after it is late.
    let c = conn(5);
    t.client(t0, c.clone().flags(SYN).seq(x));
    t.client(t0 + 40 * S, c.clone().flags(SYN).seq(x));
    // 6: a SYN-ACK nobody asked for.
    t.server(t0 + 3 * S, conn(6).reply().flags(SYN | ACK).seq(y).ack(7));
    let path = t.write("known.pcapng", Format::PcapNg);
    let want = [
        ("attempts", 5),
        ("synack", 3),
        ("completed", 2),
        ("rejected", 1),
        ("aborted", 1),
        ("retransmits_syn", 2),
        ("retransmits_synack", 0),
        ("duplicate_observations", 0),
        ("timeouts", 1),
        ("unsolicited_synack", 1),
        ("late_segments", 1),
        ("superseded", 0),
        ("invalid", 0),
    ];
    let judged = judge_counts(&path);
    let replayed = replay_counts(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(judged, want, "the judge");
    assert_eq!(replayed, want, "replay");
}

/// xorshift64*: seeded, so a failure names the capture that shows it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One connection's handshake, with behaviours picked at random.
fn generated_connection(t: &mut Trace, rng: &mut Rng, n: u16, tuples: u16, span_s: u64) {
    let mut c = if rng.chance(20) {
        conn6(n % tuples)
    } else {
        conn(n % tuples)
    };
    c.dport = [80, 443, 8080][rng.below(3) as usize];
    if rng.chance(15) {
        c = c.vlan(100);
    }
    let start = 1_700_000_000 * S + rng.below(span_s) * S + rng.below(1000) * MS;
    let x = rng.next() as u32;
    let y = rng.next() as u32;
    // Fast Open data on the SYN, accepted or not.
    let syn_data = if rng.chance(10) { 1 + rng.below(40) } else { 0 };
    let syn = c.clone().flags(SYN).seq(x).payload(syn_data as usize);
    let acked = if syn_data > 0 && rng.chance(50) {
        x.wrapping_add(1 + syn_data as u32)
    } else {
        x.wrapping_add(1)
    };
    // The SYN-ACK, up to 15 ms before the SYN (a mirror's two queues).
    let synack_data = if rng.chance(10) { 1 + rng.below(20) } else { 0 };
    let synack = c
        .reply()
        .flags(SYN | ACK)
        .seq(y)
        .ack(acked)
        .payload(synack_data as usize);
    let mut at = start;
    let syn_at = start;
    t.client(syn_at, syn.clone());
    if rng.chance(5) {
        // The same SYN seen again leaving (a host that forwards it): in
        // pcapng a duplicate observation, in classic pcap a retransmission.
        t.server(syn_at + 10_000, syn.clone());
    }
    let retransmits = if rng.chance(20) { 1 + rng.below(3) } else { 0 };
    for i in 0..retransmits {
        at = syn_at + (1 << i) * S;
        t.client(at, syn.clone());
    }
    match rng.below(10) {
        // Never answered (times out, and late retransmissions may follow).
        0 => {
            // Retried after the timeout (late), or after the tombstone is
            // forgotten too (a new attempt).
            if rng.chance(50) {
                t.client(syn_at + 31 * S + rng.below(5) * S, syn.clone());
            }
            if rng.chance(20) {
                t.client(syn_at + 150 * S + rng.below(30) * S, syn.clone());
            }
        }
        // Refused: RST-ACK (sometimes with a wrong ack: invalid), then
        // maybe the same SYN again.
        1 => {
            // Sometimes with a wrong ack, or no ACK flag: invalid.
            let wrong = rng.chance(20);
            let rst_ack = if wrong { acked.wrapping_add(5) } else { acked };
            let flags = if rng.chance(10) { RST } else { RST | ACK };
            t.server(at + MS, c.reply().flags(flags).seq(0).ack(rst_ack));
            if rng.chance(50) {
                t.client(at + rng.below(7000) * MS, syn.clone());
            }
        }
        // The client gives up before any answer.
        2 => t.client(
            at + MS,
            c.clone()
                .flags(RST)
                .seq(x.wrapping_add(1 + rng.below(2) as u32)),
        ),
        _ => {
            let synack_at = if rng.chance(15) {
                syn_at.saturating_sub(rng.below(15_000) * 1000)
            } else {
                at + 1 + rng.below(50) * MS
            };
            t.server(synack_at, synack.clone());
            let after = synack_at.max(at);
            if rng.chance(15) {
                t.server(after + S, synack.clone());
            }
            if rng.chance(5) {
                // A second SYN-ACK with another ISN: invalid.
                t.server(after + 3 * MS, synack.clone().seq(y ^ 0x10));
            }
            if rng.chance(10) {
                // The server's data or FIN before any final ACK: not one.
                t.server(
                    after + MS,
                    c.reply()
                        .flags(ACK | 0x01)
                        .seq(y.wrapping_add(1))
                        .ack(acked),
                );
            }
            match rng.below(6) {
                // Reset in SYN-RECEIVED: by the client anywhere around its
                // window, or by the server at y, y+1 or y+2.
                0 => {
                    let rst = if rng.chance(50) {
                        c.clone()
                            .flags(RST)
                            .seq(acked.wrapping_add(rng.below(70_000) as u32))
                    } else {
                        c.reply()
                            .flags(RST | ACK)
                            .seq(y.wrapping_add(rng.below(3) as u32))
                            .ack(acked)
                    };
                    let rst_at = after + 2 * MS;
                    if rng.chance(50) {
                        t.client(rst_at, rst);
                    } else {
                        t.server(rst_at, rst);
                    }
                }
                // Final ACK lost: no completion, a timeout.
                1 => {}
                // Complete, the final ACK acknowledging any SYN-ACK data,
                // sometimes not all of it, sometimes past it (invalid).
                _ => {
                    let extra = match rng.below(10) {
                        0 => synack_data as u32 + 1,
                        1 => rng.below(synack_data + 1) as u32,
                        _ => synack_data as u32,
                    };
                    let ack_at = after + 2 * MS;
                    t.client(
                        ack_at,
                        c.clone()
                            .flags(ACK)
                            .seq(acked)
                            .ack(y.wrapping_add(1 + extra)),
                    );
                    // The SYN-ACK again after completion, and the port
                    // reused, with the same ISN or another, soon or later.
                    if rng.chance(10) {
                        t.server(ack_at + S, synack.clone());
                    }
                    if rng.chance(15) {
                        let isn = if rng.chance(50) { x } else { x ^ 0x8000_0000 };
                        t.client(ack_at + rng.below(8000) * MS, c.clone().flags(SYN).seq(isn));
                    }
                }
            }
        }
    }
}

/// Generated traffic: every behaviour mixed and interleaved, in pcapng
/// (with directions) and in classic pcap (none), replayed and judged.
#[test]
fn replay_agrees_with_the_judge_on_generated_traffic() {
    let mut disagreements = Vec::new();
    let mut totals = [0u64; COUNTERS.len()];
    for seed in 1..=16u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut t = Trace::default();
        // Half the captures give each connection its own ports; in the
        // others 300 connections share 40 (port reuse, overlapping
        // attempts, segments meeting the tombstones of earlier ones).
        let tuples = if seed % 4 < 2 { 300 } else { 40 };
        // Most over a minute and a half; some over ten minutes, with the
        // capture's gaps crossing timeouts and tombstones.
        let span_s = if seed % 3 == 0 { 600 } else { 90 };
        for n in 0..300 {
            generated_connection(&mut t, &mut rng, n, tuples, span_s);
        }
        // A few unsolicited SYN-ACKs (backscatter).
        for n in 300..310 {
            let at = 1_700_000_000 * S + rng.below(90) * S;
            t.server(
                at,
                conn(n)
                    .reply()
                    .flags(SYN | ACK)
                    .seq(1)
                    .ack(rng.next() as u32),
            );
        }
        let format = if seed % 2 == 0 {
            Format::PcapNg
        } else {
            Format::PcapEthernet
        };
        let name = format!("generated-{seed}.cap");
        let path = t.write(&name, format);
        let judged = judge_counts(&path);
        let replayed = replay_counts(&path);
        for (total, (_, v)) in totals.iter_mut().zip(&judged) {
            *total += v;
        }
        if judged != replayed {
            let diff: Vec<String> = judged
                .iter()
                .zip(&replayed)
                .filter(|(j, r)| j.1 != r.1)
                .map(|(j, r)| format!("{} judge {} replay {}", j.0, j.1, r.1))
                .collect();
            disagreements.push(format!("seed {seed} ({format:?}): {}", diff.join(", ")));
            // Kept for a look: replay --explain and the judge on it.
            eprintln!("kept {}", path.display());
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    // The traffic is what it was meant to be: thousands of handshakes, and
    // every counter moved by some of them.
    let totals: Vec<_> = COUNTERS.iter().zip(totals).collect();
    assert!(
        totals[0].1 > 3000 && totals.iter().all(|(_, v)| *v > 0),
        "{totals:?}"
    );
    eprintln!("{totals:?}");
}

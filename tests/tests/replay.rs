//! `handshake-monitor replay`: captures the tests write (every case of the
//! kernel table, each capture format) and captures tcpdump takes of real
//! connections, where replay must agree with the live agent.
use std::{
    io::{BufRead as _, BufReader},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
};

use handshake_common::{
    counters::{Counter, Direction},
    parse::{Parsed, TCP_ACK, TCP_RST, TCP_SYN, parse_ethernet},
};
use handshake_tests::{
    agent::{Agent, assert_one_line_error, replay_json, run_to_exit},
    capture::{Compression, Format, Record, Way, compress, encode, write},
    cases::{In, InRaw, Out, Step, X, Y, ack, cases, client, client6, handshake, syn, synack},
    netns::{SERVER_IF, SERVER_V4, Topology},
    packet::{ACK, Packet, RST},
};
use handshake_user::replay::FUNNEL;
use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hm-replay-{}-{name}", std::process::id()))
}

/// Steps as capture records, 1 ms apart from `start_ns`.
fn records(steps: &[Step], start_ns: u64) -> Vec<Record> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (frame, way) = match s {
                In(p) => (p.build(), Way::In),
                InRaw(b) => (b.clone(), Way::In),
                Out(p) => (p.build(), Way::Out),
            };
            Record {
                ts_ns: start_ns + i as u64 * 1_000_000,
                frame,
                way,
            }
        })
        .collect()
}

fn n(json: &Value, direction: &str, key: &str) -> u64 {
    json[direction][key]
        .as_u64()
        .unwrap_or_else(|| panic!("{direction}.{key} in {json}"))
}

fn key_of(counter: Counter) -> Option<&'static str> {
    FUNNEL.iter().find(|(_, c)| *c == counter).map(|(n, _)| *n)
}

/// Every case of the kernel table, written to a pcapng capture (with
/// directions) and replayed, gives the kernel table's counts; what the
/// table leaves in the flow table is reported as timeouts at the end.
#[test]
fn every_kernel_case_replays_to_the_same_counts() {
    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let path = tmp(&format!("case{i}.pcapng"));
        write(
            &path,
            Format::PcapNg,
            &records(&case.steps, 1_700_000_000_000_000_000),
        );
        let (json, out) = replay_json(&path, &[]);
        let _ = std::fs::remove_file(&path);
        if !out.status.success() {
            failures.push(format!(
                "{}: exit {}: {}",
                case.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        for (d, dname) in [
            (Direction::Inbound, "inbound"),
            (Direction::Outbound, "outbound"),
        ] {
            for (key, counter) in FUNNEL {
                let expected: u64 = case
                    .expect
                    .iter()
                    .filter(|(_, ed, c, _)| *ed == d && c == counter)
                    .map(|e| e.3)
                    .sum();
                let got = n(&json, dname, key);
                let is_timeout = matches!(
                    counter,
                    Counter::TimeoutSynSent | Counter::TimeoutSynReceived
                );
                if !is_timeout && got != expected {
                    failures.push(format!(
                        "{}: {dname}.{key} = {got}, expected {expected}",
                        case.name
                    ));
                }
            }
        }
        let timeouts: u64 = ["inbound", "outbound"]
            .iter()
            .map(|d| n(&json, d, "timeouts_syn_sent") + n(&json, d, "timeouts_syn_received"))
            .sum();
        if timeouts != case.flows as u64 {
            failures.push(format!(
                "{}: {timeouts} timeouts at the end, {} flows were left open",
                case.name, case.flows
            ));
        }
        for (_, _, counter, count) in &case.expect {
            if let Some(reason) = counter.name().strip_prefix("parse_") {
                let got = json["parse_errors"][reason].as_u64().unwrap_or(0);
                if got != *count {
                    failures.push(format!(
                        "{}: parse_errors.{reason} = {got}, expected {count}",
                        case.name
                    ));
                }
            } else if key_of(*counter).is_none() && *counter != Counter::Fragments {
                failures.push(format!(
                    "{}: {counter:?} is not in the replay report",
                    case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The same traffic in every capture format gives the same funnel.
#[test]
fn every_capture_format_reads_the_same() {
    let c = client();
    let mut steps = handshake(&c);
    steps.extend(handshake(&client6()));
    let refused = Packet::tcp(c.src, 41000, c.dst, 81);
    steps.extend([
        In(syn(&refused, X)),
        Out(refused.reply().flags(RST | ACK).ack(X + 1)),
    ]);
    let recs = records(&steps, 1_600_000_000_123_456_000);
    for format in [
        Format::PcapEthernet,
        Format::PcapEthernetNanosBigEndian,
        Format::PcapRawIp,
        Format::PcapSll2,
        Format::PcapNg,
        Format::PcapNgForeignInterface,
        Format::PcapNull,
        Format::PcapLoop,
        Format::PcapNflog,
    ] {
        let path = tmp(&format!("{format:?}"));
        write(&path, format, &recs);
        let (json, out) = replay_json(&path, &[]);
        let _ = std::fs::remove_file(&path);
        if format == Format::PcapNgForeignInterface {
            assert_eq!(json["other_link_type"], 1, "the foreign interface's packet");
            assert_eq!(json["frames"], 9, "{format:?}");
        } else {
            assert_eq!(json["frames"], 8, "{format:?}");
        }
        assert!(
            out.status.success(),
            "{format:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (key, want) in [
            ("attempts", 3),
            ("synack", 2),
            ("completed", 2),
            ("rejected", 1),
        ] {
            assert_eq!(n(&json, "inbound", key), want, "{format:?} {key}");
        }
        assert_eq!(json["listeners"]["80"]["completed"], 1, "{format:?}");
        assert_eq!(json["listeners"]["443"]["completed"], 1, "{format:?}");
        assert_eq!(json["listeners"]["81"]["rejected"], 1, "{format:?}");
        assert!(
            (json["duration_seconds"].as_f64().unwrap_or(0.0) - 0.007).abs() < 1e-9,
            "{format:?}: {}",
            json["duration_seconds"]
        );
    }
}

/// Captures as other tools leave them are read whole: compressed (gzip,
/// zstd); with a GSO frame of 70 kB sent by the host (`tcpdump -i any`),
/// which once aborted the replay: the programs get its headers; with a
/// sub-second field past a second (a broken writer), which once added
/// 2147 s: clamped.
#[test]
fn captures_made_elsewhere_are_read_whole() {
    let c = client();
    let mut steps = handshake(&c);
    // After the handshake, the server sends 70 kB in one segment (GSO).
    steps.push(Out(c
        .reply()
        .flags(ACK)
        .seq(Y + 1)
        .ack(X + 1)
        .payload(70_000)));
    let recs = records(&steps, 1_600_000_000_000_000_000);
    let check = |path: &std::path::Path, what: &str| {
        let (json, out) = replay_json(path, &[]);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json["frames"], 4, "{what}");
        assert_eq!(json["not_run"], 0, "{what}");
        assert_eq!(n(&json, "inbound", "completed"), 1, "{what}");
        assert_eq!(n(&json, "inbound", "attempts"), 1, "{what}");
        json
    };
    for format in [Format::PcapSll2, Format::PcapNg] {
        let path = tmp(&format!("big-{format:?}"));
        write(&path, format, &recs);
        let json = check(&path, &format!("{format:?}"));
        assert_eq!(json["cut_to_headers"], 1, "{format:?}");
        let plain = std::fs::read(&path).expect("read");
        for how in [Compression::Gzip, Compression::Zstd] {
            std::fs::write(&path, compress(&plain, how)).expect("write");
            check(&path, &format!("{format:?} {how:?}"));
        }
        let _ = std::fs::remove_file(&path);
    }
    // The last record's microseconds read 1500000.
    let mut bytes = encode(Format::PcapEthernet, &recs[..3]);
    let last = bytes.len() - recs[2].frame.len() - 16;
    bytes[last + 4..last + 8].copy_from_slice(&1_500_000u32.to_le_bytes());
    let path = tmp("clamped.pcap");
    std::fs::write(&path, &bytes).expect("write");
    let (json, out) = replay_json(&path, &[]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success());
    assert_eq!(json["clamped_timestamps"], 1);
    let span = json["duration_seconds"].as_f64().unwrap_or(f64::MAX);
    assert!(span < 1.0, "clamped, not 2147 s: {span}");
}

/// `--explain` says, per handshake segment, what it was counted as and
/// why: an invalid SYN-ACK and an invalid final ACK with what was expected
/// and what came, then the valid ones.
#[test]
fn explain_says_what_each_segment_was_counted_as_and_why() {
    let c = client();
    let steps = vec![
        In(syn(&c, X)),
        Out(synack(&c, Y, X + 2)),
        Out(synack(&c, Y, X + 1)),
        In(ack(&c, X + 1, Y + 2)),
        In(ack(&c, X + 1, Y + 1)),
    ];
    let path = tmp("explain.pcapng");
    write(&path, Format::PcapNg, &records(&steps, 1_000_000_000));
    let file = path.to_string_lossy().into_owned();
    let out = run_to_exit(&[], &["replay", &file, "--explain"], &[]);
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("frame ")).collect();
    let (x, y) = (X, Y);
    let want = [
        "frame 1 ".to_owned(),
        format!("SYN seq={x} ack=0: attempts"),
        format!(
            "SYN-ACK seq={y} ack={}: invalid{{reason=\"synack_bad_ack\"}} (expected ack {}, got {})",
            x + 2,
            x + 1,
            x + 2
        ),
        format!("SYN-ACK seq={y} ack={}: synack", x + 1),
        format!(
            "ACK seq={} ack={}: invalid{{reason=\"ack_bad_ack\"}} (expected ack {}, got {})",
            x + 1,
            y + 2,
            y + 1,
            y + 2
        ),
        format!("ACK seq={} ack={}: completed", x + 1, y + 1),
    ];
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with(&want[0]) && lines[0].contains(&want[1]),
        "{}",
        lines[0]
    );
    for (line, w) in lines[1..].iter().zip(&want[2..]) {
        assert!(line.contains(w.as_str()), "{line}\nwanted: {w}");
    }
}

/// The capture's clock drives latencies and timeouts: a final ACK 40 s
/// after the SYN-ACK completes nothing with a 30 s timeout, and completes
/// the handshake with a 60 s one.
#[test]
fn capture_time_drives_latency_and_timeouts() {
    let c = client();
    let t0 = 1_700_000_000_000_000_000u64;
    let fast = vec![
        Record {
            ts_ns: t0,
            frame: syn(&c, X).build(),
            way: Way::In,
        },
        Record {
            ts_ns: t0 + 2_000_000,
            frame: synack(&c, Y, X + 1).build(),
            way: Way::Out,
        },
        Record {
            ts_ns: t0 + 9_000_000,
            frame: ack(&c, X + 1, Y + 1).build(),
            way: Way::In,
        },
    ];
    let path = tmp("latency.pcapng");
    write(&path, Format::PcapNg, &fast);
    let (json, _) = replay_json(&path, &[]);
    let lat = &json["inbound"]["latency_seconds"];
    assert!(
        (lat["synack"]["mean"].as_f64().unwrap_or(0.0) - 0.002).abs() < 1e-12,
        "{lat}"
    );
    assert!(
        (lat["ack"]["mean"].as_f64().unwrap_or(0.0) - 0.007).abs() < 1e-12,
        "{lat}"
    );

    let slow = vec![
        Record {
            ts_ns: t0,
            frame: syn(&c, X).build(),
            way: Way::In,
        },
        Record {
            ts_ns: t0 + 1_000_000,
            frame: synack(&c, Y, X + 1).build(),
            way: Way::Out,
        },
        Record {
            ts_ns: t0 + 40_000_000_000,
            frame: ack(&c, X + 1, Y + 1).build(),
            way: Way::In,
        },
    ];
    write(&path, Format::PcapNg, &slow);
    let (json, _) = replay_json(&path, &[]);
    assert_eq!(
        (
            n(&json, "inbound", "completed"),
            n(&json, "inbound", "timeouts_syn_received")
        ),
        (0, 1)
    );
    let (json, _) = replay_json(&path, &["--handshake-timeout", "60s"]);
    assert_eq!(
        (
            n(&json, "inbound", "completed"),
            n(&json, "inbound", "timeouts_syn_received")
        ),
        (1, 0)
    );
    let _ = std::fs::remove_file(&path);
}

/// Broken input: a clear line, a non-zero exit, and for a file cut short,
/// the counts up to the cut.
#[test]
fn truncated_corrupt_and_unsupported_captures() {
    let mut steps = handshake(&client());
    steps.extend(handshake(&client6()));
    let bytes = encode(Format::PcapEthernet, &records(&steps, 1_000_000_000));
    let path = tmp("cut.pcap");
    // Cut in the middle of the last record: the first handshake and two
    // segments of the second are read.
    std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("write");
    let (json, out) = replay_json(&path, &[]);
    assert_one_line_error(&out, "truncated at byte");
    assert_eq!(json["complete"], false);
    assert_eq!(json["frames"], 5);
    assert_eq!(n(&json, "inbound", "completed"), 1);
    assert_eq!(
        n(&json, "inbound", "timeouts_syn_received"),
        1,
        "the cut handshake is reported open"
    );
    let file = path.to_string_lossy().into_owned();
    // An 802.11 capture.
    let mut wifi = bytes[..24].to_vec();
    wifi[20..24].copy_from_slice(&105u32.to_le_bytes());
    std::fs::write(&path, &wifi).expect("write");
    assert_one_line_error(
        &run_to_exit(&[], &["replay", &file], &[]),
        "unsupported link type 105",
    );
    std::fs::write(&path, b"GIF89a, not a capture").expect("write");
    assert_one_line_error(
        &run_to_exit(&[], &["replay", &file], &[]),
        "not a pcap or pcapng file",
    );
    // A record claiming 1 GiB.
    let mut huge = bytes[..24].to_vec();
    huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0x40]);
    std::fs::write(&path, &huge).expect("write");
    assert_one_line_error(
        &run_to_exit(&[], &["replay", &file], &[]),
        "corrupt at byte 24: record length",
    );
    let _ = std::fs::remove_file(&path);
    assert_one_line_error(
        &run_to_exit(&[], &["replay", "/nonexistent.pcap"], &[]),
        "cannot read /nonexistent.pcap",
    );
}

/// More handshakes open at once than the flow table holds (a flood
/// capture): the evicted ones are counted, never followed to an end, and a
/// warning names the flag that replays the capture whole.
#[test]
fn a_flood_past_the_table_is_counted_evicted() {
    let steps: Vec<Step> = (0..4000u32)
        .map(|i| {
            let src = std::net::IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
            In(Packet::tcp(src, 40000, client().dst, 80)
                .flags(TCP_SYN)
                .seq(i))
        })
        .collect();
    let path = tmp("flood.pcap");
    write(&path, Format::PcapEthernet, &records(&steps, 1_000_000_000));
    let evicted = |json: &Value| {
        n(json, "inbound", "evicted_syn_sent") + n(json, "inbound", "evicted_syn_received")
    };
    let (small, out) = replay_json(&path, &["--flow-table-size", "1024"]);
    let (whole, whole_out) = replay_json(&path, &[]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success());
    assert_eq!(n(&small, "inbound", "attempts"), 4000);
    // Once the table is full, each new attempt evicts one.
    assert!(evicted(&small) >= 4000 - 1024, "{small}");
    assert_eq!(
        evicted(&small) + n(&small, "inbound", "timeouts_syn_sent"),
        4000
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("warning: {} handshakes", evicted(&small)))
            && stderr.contains("--flow-table-size (now 1024)"),
        "{stderr}"
    );
    assert_eq!(evicted(&whole), 0);
    assert_eq!(n(&whole, "inbound", "timeouts_syn_sent"), 4000);
    assert!(whole_out.stderr.is_empty());
}

/// --format prometheus is the live exposition's format and passes promtool.
#[test]
fn prometheus_format_passes_promtool() {
    let path = tmp("prom.pcapng");
    write(
        &path,
        Format::PcapNg,
        &records(&handshake(&client()), 5_000_000_000),
    );
    let file = path.to_string_lossy().into_owned();
    let out = run_to_exit(&[], &["replay", &file, "--format", "prometheus"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("tcp_handshake_completed_total{direction=\"inbound\",family=\"ipv4\",iface=\"capture\"} 1\n"), "{text}");
    std::fs::write(format!("{file}.prom"), &text).expect("write");
    let check = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {file}.prom"))
        .status();
    assert!(check.expect("promtool").success());
    let _ = std::fs::remove_file(format!("{file}.prom"));
    let table = run_to_exit(&[], &["replay", &file], &[]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("completed") && table.contains("80 "),
        "{table}"
    );
    // --progress (default: large files on a terminal) reports on stderr,
    // ending at 100 %, and leaves stdout to the report.
    let out = run_to_exit(
        &[],
        &["replay", &file, "--progress", "--format", "json"],
        &[],
    );
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("100.0 % (3 frames)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).expect("stdout is still the JSON report");
    let _ = std::fs::remove_file(&path);
}

/// tcpdump in the server namespace records real traffic while the live
/// agent watches it; replaying the capture gives the agent's numbers.
#[test]
fn replay_of_a_tcpdump_capture_agrees_with_the_live_agent() {
    let topo = Topology::new();
    let pcap = tmp("live.pcap");
    let mut tcpdump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.server.name,
            "tcpdump",
            "-i",
            "any",
            "-U",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&pcap)
        .arg("tcp and not port 9437")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("tcpdump (installed by cargo xtask setup)");
    // tcpdump says "listening on" once its capture is open.
    let mut stderr = BufReader::new(tcpdump.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("tcpdump output") > 0,
            "tcpdump exited before capturing"
        );
    }
    let agent = Agent::start(
        &topo.server,
        &["--iface", SERVER_IF, "--handshake-timeout", "60s"],
    );
    let target = std::net::SocketAddr::new(SERVER_V4.parse().expect("ip"), 8080);
    let server = topo.server.accept_n(target, 12);
    topo.client.connect_n(target, 12);
    assert_eq!(server.join().expect("server"), 12);
    topo.client.run(|| {
        for _ in 0..3 {
            assert!(TcpStream::connect((SERVER_V4, 9)).is_err());
        }
    });
    let live = agent.scrape(&topo.server);
    // tcpdump may lag behind under load: stop it only once the capture
    // holds every SYN and RST sent, and has stopped growing.
    let counts = |path: &std::path::Path| {
        let (mut syns, mut rsts) = (0, 0);
        if let Ok(mut reader) = handshake_user::pcap::Reader::open(path) {
            while let Ok(Some(p)) = reader.next_packet() {
                if let Ok(Parsed::Tcp(seg)) = parse_ethernet(&p.frame[..]) {
                    syns += usize::from(seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN);
                    rsts += usize::from(seg.flags & TCP_RST != 0);
                }
            }
        }
        (syns, rsts)
    };
    let mut size = 0;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = std::fs::metadata(&pcap).map_or(0, |m| m.len());
        if now == size && counts(&pcap) == (15, 3) {
            break;
        }
        size = now;
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    tcpdump.wait().expect("tcpdump exit");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("tcpdump stats");
    let (json, out) = replay_json(&pcap, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json["link_type"], "linux_sll2", "tcpdump said: {rest}");
    let s0 = [("iface", SERVER_IF), ("direction", "inbound")];
    for (metric, key, want) in [
        ("tcp_handshake_attempts_total", "attempts", 15.0),
        ("tcp_handshake_synack_total", "synack", 12.0),
        ("tcp_handshake_completed_total", "completed", 12.0),
        ("tcp_handshake_rejected_total", "rejected", 3.0),
    ] {
        assert_eq!(live.sum(metric, &s0), want, "live {metric}");
        assert_eq!(n(&json, "inbound", key) as f64, want, "replay {key}");
    }
    let _ = std::fs::remove_file(&pcap);
}

/// Tap mode: a SYN-ACK captured 300 µs before its SYN (two mirror queues)
/// is run after it: one handshake, completed, not an unsolicited SYN-ACK
/// and a timeout. A SYN-ACK that no SYN follows stays unsolicited.
#[test]
fn a_synack_captured_before_its_syn_is_put_back() {
    let c = client();
    let alone = Packet::tcp(
        handshake_tests::cases::v4(9),
        5555,
        handshake_tests::cases::v4(2),
        80,
    );
    let t0 = 1_700_000_000_000_000_000;
    let rec = |us: u64, p: Packet| Record {
        ts_ns: t0 + us * 1000,
        frame: p.build(),
        way: Way::In,
    };
    let path = tmp("reordered.pcap");
    write(
        &path,
        Format::PcapEthernet,
        &[
            rec(0, synack(&c, Y, X + 1)),
            rec(300, syn(&c, X)),
            rec(2_000, synack(&alone, Y, X + 1)),
            rec(2_500, ack(&c, X + 1, Y + 1)),
        ],
    );
    let (json, out) = replay_json(&path, &[]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{out:?}");
    let both = |key: &str| n(&json, "inbound", key) + n(&json, "outbound", key);
    assert_eq!(both("attempts"), 1, "{json}");
    assert_eq!(both("synack"), 1);
    assert_eq!(both("completed"), 1);
    assert_eq!(both("unsolicited_synack"), 1, "the lone one");
    assert_eq!(both("timeouts_syn_sent") + both("timeouts_syn_received"), 0);
    assert_eq!(json["reordered_synacks"], 1);
}

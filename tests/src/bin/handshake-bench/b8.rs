//! B8: reading captures, ours against pcap-parser (issue 21: keep the
//! hand-written reader only where it measurably does better).
use std::{fs::File, path::Path};

use handshake_tests::capture::{self, Format, Record, Way};
use handshake_user::replay::pcap::{LinkType, Reader, to_ethernet};
use pcap_parser::{Block, PcapBlockOwned, PcapError, traits::PcapNGPacketBlock as _};

use super::*;

/// Frames and Ethernet bytes read through replay's own reader.
fn ours(path: &Path) -> (u64, u64) {
    let mut reader = Reader::open(path).expect("open");
    let (mut frames, mut bytes) = (0, 0);
    while let Some(p) = reader.next_packet().expect("read") {
        frames += 1;
        bytes += p.frame.len() as u64;
    }
    (frames, bytes)
}

/// The same through pcap-parser's streaming reader, each packet turned
/// into an Ethernet frame as replay needs it.
fn pcap_parser(path: &Path) -> (u64, u64) {
    let file = File::open(path).expect("open");
    let mut reader = pcap_parser::create_reader(1 << 20, file).expect("pcap-parser");
    let (mut frames, mut bytes) = (0, 0);
    let mut legacy = LinkType::from_code(1);
    let mut interfaces: Vec<LinkType> = Vec::new();
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                let packet = match &block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy = LinkType::from_code(h.network.0 as u32);
                        None
                    }
                    PcapBlockOwned::Legacy(b) => Some((legacy, b.data)),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(LinkType::from_code(idb.linktype.0 as u32));
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => interfaces
                        .get(epb.if_id as usize)
                        .map(|&link| (link, epb.packet_data())),
                    PcapBlockOwned::NG(_) => None,
                };
                if let Some((link, data)) = packet {
                    let (frame, _) = to_ethernet(link, data);
                    frames += 1;
                    bytes += frame.len() as u64;
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => reader.refill().expect("refill"),
            Err(e) => panic!("pcap-parser: {e:?}"),
        }
    }
    (frames, bytes)
}

/// A capture as a busy server sees one: handshakes and data, three in four
/// frames small (SYN, SYN-ACK, ACK, pure ACKs), one in four a full segment.
fn records(n: usize) -> Vec<Record> {
    let clients = distinct_clients(n / 4 + 1, false, false);
    (0..n)
        .map(|i| {
            let c = &clients[i / 4];
            let frame = match i % 4 {
                0 => syn(c, 7).build(),
                1 => synack(c, 9, 8).build(),
                2 => ack(c, 8, 10).build(),
                _ => c
                    .clone()
                    .flags(ACK | PSH)
                    .seq(8)
                    .ack(10)
                    .payload(1400)
                    .build(),
            };
            Record {
                ts_ns: 1_000_000 * i as u64,
                frame,
                way: if i % 4 == 1 { Way::Out } else { Way::In },
            }
        })
        .collect()
}

pub(crate) fn b8(s: &Settings, rows: &mut Vec<Row>) {
    let n = if s.quick { 200_000 } else { 1_000_000 };
    eprintln!("B8 reading captures: replay's reader against pcap-parser, {n} frames");
    let dir = std::env::temp_dir().join(format!("handshake-b8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let records = records(n);
    for (label, format) in [
        ("classic pcap", Format::PcapEthernet),
        ("pcapng", Format::PcapNg),
    ] {
        let path = dir.join(label.replace(' ', "-"));
        capture::write(&path, format, &records);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        // Paired rounds, order alternating, the file in the page cache.
        let (mut theirs_s, mut ours_s) = (Vec::new(), Vec::new());
        for round in 0..s.runs {
            let time = |f: fn(&Path) -> (u64, u64), out: &mut Vec<f64>| {
                let t = Instant::now();
                let (frames, _) = f(&path);
                out.push(t.elapsed().as_secs_f64());
                assert_eq!(frames, n as u64, "{label}: every frame read");
            };
            if round % 2 == 0 {
                time(pcap_parser, &mut theirs_s);
                time(ours, &mut ours_s);
            } else {
                time(ours, &mut ours_s);
                time(pcap_parser, &mut theirs_s);
            }
        }
        assert_eq!(ours(&path), pcap_parser(&path), "{label}: the same frames");
        let (theirs, ours_t) = (median(&mut theirs_s), median(&mut ours_s));
        let rate = |secs: f64| f64::from(n as u32) / secs / 1e6;
        rows.push(Row {
            bench: "B8",
            case: format!(
                "read a {label} capture to Ethernet frames ({n} frames, {} MiB, page cache)",
                size >> 20
            ),
            baseline: format!("pcap-parser {:.2} M frames/s", rate(theirs)),
            ours: format!("{:.2} M frames/s", rate(ours_t)),
            figure: format!("{:.2}x", theirs / ours_t),
            goal: "(contrast)".to_owned(),
            verdict: "-",
        });
        eprintln!(
            "  B8 {label}: pcap-parser {:.3} s, ours {:.3} s",
            theirs, ours_t
        );
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir(&dir);
}

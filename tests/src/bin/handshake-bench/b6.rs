//! B6: conservation: every handshake sent is counted.
use super::*;

pub(crate) fn b6(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!("B6 conservation: packets sent = packets counted");
    let topo = quiet_topology();
    let agent = Agent::start(&topo.server, &["--iface", SERVER_IF]);
    let per_kind = if s.quick { 20_000 } else { 100_000 };
    let mut arp = data_segment(&client());
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let syns: Vec<Vec<u8>> = distinct_clients(per_kind, false, false)
        .iter()
        .map(|c| syn(c, 1).build())
        .collect();
    let data: Vec<Vec<u8>> = (0..per_kind)
        .map(|i| data_segment(&Packet::tcp(v4(1), 1024 + (i % 50000) as u16, v4(2), 80)))
        .collect();
    let other: Vec<Vec<u8>> = (0..per_kind).map(|_| arp.clone()).collect();
    let before = agent.scrape(&topo.server);
    let mut frames = syns;
    frames.extend(data);
    frames.extend(other);
    let total = frames.len() as u64;
    topo.inject_from_client_as_is(otherhost(frames));
    let l = [("iface", SERVER_IF), ("hook", "ingress")];
    let after = agent.wait_for(
        &topo.server,
        Duration::from_secs(30),
        "every frame counted",
        |e| {
            e.sum("tcp_handshake_packets_total", &l) - before.sum("tcp_handshake_packets_total", &l)
                >= total as f64
        },
    );
    let counted = after.sum("tcp_handshake_packets_total", &l)
        - before.sum("tcp_handshake_packets_total", &l);
    let syn_counted = after.sum("tcp_handshake_syn_packets_total", &[("iface", SERVER_IF)])
        - before.sum("tcp_handshake_syn_packets_total", &[("iface", SERVER_IF)]);
    rows.push(Row {
        bench: "B6",
        case: format!("{total} frames sent (1/3 SYN, 1/3 data, 1/3 ARP)"),
        baseline: format!("{total} sent"),
        ours: format!("{counted:.0} counted, {syn_counted:.0} SYNs"),
        figure: format!("{:+.0}", counted - total as f64),
        goal: "exact".to_owned(),
        verdict: verdict(Some(
            counted == total as f64 && syn_counted == per_kind as f64,
        )),
    });
    eprintln!("  B6 sent {total}, counted {counted}, SYNs {syn_counted}");
    if counted != total as f64 {
        for l in after.text.lines().filter(|l| {
            l.starts_with("tcp_handshake_packets_total")
                || l.starts_with("tcp_handshake_parse_errors_total")
                || l.starts_with("tcp_handshake_syn_packets_total")
        }) {
            if !l.ends_with(" 0") {
                eprintln!("    {l}");
            }
        }
    }
}

//! Any bytes through the frame parser, then the parsed segment through every
//! handshake decision against a state taken from the same bytes. Checks:
//! no panic; a TCP result is unchanged by trailing bytes (Ethernet padding);
//! the ISN+1 rules hold whatever the numbers; the kernel's data-segment
//! screen answers only for frames the full parse reads as it does.
#![no_main]

use handshake_common::{
    counters::Family,
    flow::{FlowState, Hook, Stage},
    handshake::{
        AckDecision, SegmentKind, SynAckDecision, acks_syn, classify, on_ack, on_rst, on_syn,
        on_synack,
    },
    parse::{Parsed, parse_ethernet, parse_raw_ip, screen::ordinary_ack_slot},
    pending::pending_slot_of,
};
use libfuzzer_sys::fuzz_target;

fn word(data: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, v) in b.iter_mut().enumerate() {
        *v = data.get(at + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_raw_ip(data, 0);
    let parsed = parse_ethernet(data);
    if let Some(slot) = ordinary_ack_slot(data) {
        let Ok(Parsed::Tcp(seg)) = parsed else {
            panic!("screened slot {slot}, full parse {parsed:?}")
        };
        assert_eq!(classify(seg.flags), SegmentKind::Ack, "screened a non-ACK");
        let ipv4 = seg.family == Family::Ipv4;
        assert_eq!(
            slot,
            pending_slot_of(
                ipv4,
                &seg.src_addr,
                &seg.dst_addr,
                seg.src_port,
                seg.dst_port
            )
        );
    }
    let Ok(Parsed::Tcp(seg)) = parsed else { return };

    let mut padded = data.to_vec();
    padded.extend_from_slice(&[0xa5; 17]);
    assert_eq!(
        parse_ethernet(&padded[..]),
        parsed,
        "trailing bytes changed the parse"
    );

    let x = word(data, 0);
    let y = word(data, 4);
    let hook = Hook::new(word(data, 8), data.first().is_some_and(|b| b & 1 == 1));
    let syn_sent = FlowState {
        client_isn: x,
        syn_payload: seg.payload_len,
        stage: Stage::SynSent as u8,
        syn_hook: hook,
        ..FlowState::default()
    };
    let _ = on_syn(Some(&syn_sent), seg.seq, hook, 0);
    let decision = on_synack(&syn_sent, seg.seq, seg.ack, hook, 0);
    let x1 = x.wrapping_add(1);
    let valid = seg.ack == x1
        || (seg.payload_len != 0 && seg.ack == x1.wrapping_add(u32::from(seg.payload_len)));
    assert_eq!(decision == SynAckDecision::Accept, valid);
    assert_eq!(acks_syn(&syn_sent, seg.ack), valid);

    let syn_received = FlowState {
        server_isn: y,
        synack_ack: x1,
        stage: Stage::SynReceived as u8,
        ..syn_sent
    };
    let done = on_ack(&syn_received, seg.seq, seg.ack) == AckDecision::Complete;
    assert_eq!(done, seg.seq == x1 && seg.ack == y.wrapping_add(1));
    let _ = on_rst(&syn_received, hook.egress == 1, seg.seq, seg.ack, seg.flags);
    let _ = on_rst(&syn_sent, hook.egress == 0, seg.seq, seg.ack, seg.flags);
});

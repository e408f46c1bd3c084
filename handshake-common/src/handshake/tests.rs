//! Host tests of the transition decisions.
use proptest::prelude::*;

use super::*;
use crate::parse::{TCP_FIN, TCP_PSH, TCP_RST};

const INGRESS: Hook = Hook::new(2, false);
const EGRESS: Hook = Hook::new(2, true);

fn syn_sent(x: u32) -> FlowState {
    FlowState {
        client_isn: x,
        stage: Stage::SynSent as u8,
        syn_hook: INGRESS,
        ..FlowState::default()
    }
}

fn syn_received(x: u32, y: u32) -> FlowState {
    FlowState {
        server_isn: y,
        synack_ack: x.wrapping_add(1),
        stage: Stage::SynReceived as u8,
        synack_hook: EGRESS,
        ..syn_sent(x)
    }
}

#[test]
fn classify_flags() {
    assert_eq!(classify(TCP_SYN), SegmentKind::Syn);
    assert_eq!(classify(TCP_SYN | TCP_ACK), SegmentKind::SynAck);
    assert_eq!(classify(TCP_RST | TCP_ACK), SegmentKind::Rst);
    assert_eq!(classify(TCP_RST | TCP_SYN), SegmentKind::Rst);
    assert_eq!(classify(TCP_ACK | TCP_PSH), SegmentKind::Ack);
    assert_eq!(classify(TCP_FIN), SegmentKind::Other);
}

#[test]
fn syn_decisions() {
    assert_eq!(on_syn(None, 7, INGRESS, 0), SynDecision::NewAttempt);
    assert_eq!(
        on_syn(Some(&syn_sent(7)), 7, INGRESS, 0),
        SynDecision::Retransmit
    );
    assert_eq!(
        on_syn(Some(&syn_sent(7)), 7, Hook::new(3, true), 0),
        SynDecision::Duplicate
    );
    assert_eq!(
        on_syn(Some(&syn_sent(7)), 8, INGRESS, 0),
        SynDecision::Supersede(Stage::SynSent)
    );
    assert_eq!(
        on_syn(Some(&syn_received(7, 9)), 8, INGRESS, 0),
        SynDecision::Supersede(Stage::SynReceived)
    );
}

#[test]
fn synack_decisions() {
    let s = syn_sent(u32::MAX); // x+1 wraps to 0
    assert_eq!(on_synack(&s, 5, 0, EGRESS, 0), SynAckDecision::Accept);
    assert_eq!(on_synack(&s, 5, 1, EGRESS, 0), SynAckDecision::InvalidAck);
    let r = syn_received(10, 20);
    assert_eq!(on_synack(&r, 20, 11, EGRESS, 0), SynAckDecision::Retransmit);
    assert_eq!(on_synack(&r, 20, 11, INGRESS, 0), SynAckDecision::Duplicate);
    assert_eq!(on_synack(&r, 21, 11, EGRESS, 0), SynAckDecision::InvalidSeq);
    assert_eq!(on_synack(&r, 20, 12, EGRESS, 0), SynAckDecision::InvalidAck);
}

#[test]
fn fast_open_data_on_syn() {
    let s = FlowState {
        syn_payload: 100,
        ..syn_sent(1000)
    };
    // Server accepted the data: ack = x+1+len.
    assert_eq!(on_synack(&s, 5, 1101, EGRESS, 0), SynAckDecision::Accept);
    // Server ignored it: ack = x+1.
    assert_eq!(on_synack(&s, 5, 1001, EGRESS, 0), SynAckDecision::Accept);
    assert_eq!(
        on_synack(&s, 5, 1100, EGRESS, 0),
        SynAckDecision::InvalidAck
    );
    let r = FlowState {
        server_isn: 5,
        synack_ack: 1101,
        stage: Stage::SynReceived as u8,
        ..s
    };
    assert_eq!(on_ack(&r, 1101, 6), AckDecision::Complete);
    assert_eq!(on_ack(&r, 1001, 6), AckDecision::InvalidSeq);
}

#[test]
fn ack_decisions() {
    assert_eq!(on_ack(&syn_sent(10), 11, 1), AckDecision::Ignore);
    let r = syn_received(10, u32::MAX);
    assert_eq!(on_ack(&r, 11, 0), AckDecision::Complete);
    assert_eq!(on_ack(&r, 12, 0), AckDecision::InvalidSeq);
    assert_eq!(on_ack(&r, 11, 1), AckDecision::InvalidAck);
}

#[test]
fn rst_decisions() {
    let s = syn_sent(10);
    assert_eq!(
        on_rst(&s, false, 0, 11, TCP_RST | TCP_ACK),
        RstDecision::Rejected
    );
    assert_eq!(
        on_rst(&s, false, 0, 12, TCP_RST | TCP_ACK),
        RstDecision::Invalid
    );
    assert_eq!(
        on_rst(&s, false, 0, 11, TCP_RST),
        RstDecision::Invalid,
        "no ACK: not acceptable in SYN-SENT"
    );
    assert_eq!(on_rst(&s, true, 11, 0, TCP_RST), RstDecision::Aborted);
    assert_eq!(on_rst(&s, true, 99, 0, TCP_RST), RstDecision::Invalid);
    let r = syn_received(10, 20);
    assert_eq!(on_rst(&r, false, 21, 0, TCP_RST), RstDecision::Aborted);
    assert_eq!(on_rst(&r, false, 20, 0, TCP_RST), RstDecision::Aborted);
    assert_eq!(
        on_rst(&r, false, 5, 11, TCP_RST | TCP_ACK),
        RstDecision::Invalid
    );
    assert_eq!(on_rst(&r, true, 11, 0, TCP_RST), RstDecision::Aborted);
    assert_eq!(on_rst(&r, true, 12, 0, TCP_RST), RstDecision::Invalid);
}

#[test]
fn flood_guard_budget_and_window() {
    let mut g = FloodGuard::default();
    let window = 1_000;
    assert!(g.admit(5_000, window, 2));
    assert!(g.admit(5_001, window, 2));
    assert!(!g.admit(5_002, window, 2));
    assert!(!g.admit(5_999, window, 2));
    assert!(g.admit(6_000, window, 2), "a new window refills the budget");
    assert!(!g.admit(6_000, window, 0), "budget 0 tracks nothing");
}

proptest! {
    /// Only x+1 (or x+1+len with Fast Open) moves a flow to syn_received.
    #[test]
    fn synack_accepts_only_isn_plus_one(x: u32, ack: u32, payload in 0u16..2000) {
        let s = FlowState { syn_payload: payload, ..syn_sent(x) };
        let ok = ack == x.wrapping_add(1) || (payload != 0 && ack == x.wrapping_add(1).wrapping_add(u32::from(payload)));
        prop_assert_eq!(on_synack(&s, 0, ack, EGRESS, 0) == SynAckDecision::Accept, ok);
    }

    /// Only seq = x+1 and ack = y+1 completes.
    #[test]
    fn ack_completes_only_on_both_plus_one(x: u32, y: u32, seq: u32, ack: u32) {
        let r = syn_received(x, y);
        let done = on_ack(&r, seq, ack) == AckDecision::Complete;
        prop_assert_eq!(done, seq == x.wrapping_add(1) && ack == y.wrapping_add(1));
    }

    /// Whatever the segment, a retransmitted SYN never counts as a new attempt.
    #[test]
    fn same_isn_is_never_a_new_attempt(x: u32, y: u32, ifindex: u32, egress: bool, received: bool) {
        let s = if received { syn_received(x, y) } else { syn_sent(x) };
        let d = on_syn(Some(&s), x, Hook::new(ifindex, egress), 0);
        prop_assert!(matches!(d, SynDecision::Retransmit | SynDecision::Duplicate));
    }
}

fn expired(x: u32, y: u32) -> FlowState {
    FlowState {
        stage: Stage::Expired as u8,
        ..syn_received(x, y)
    }
}

/// A handshake that ended from `from` at time `at`.
fn ended(x: u32, y: u32, from: Stage, at: u64) -> FlowState {
    FlowState {
        stage: Stage::Ended as u8,
        ended_from: from as u8,
        synack_ns: at,
        ..syn_received(x, y)
    }
}

#[test]
fn ended_handshakes_take_repeats_as_retransmissions() {
    let s = 1_000_000_000;
    let linger = crate::expire::ENDED_LINGER_NS;
    // Rejected at 1 s: the client's connect() retry with the same ISN.
    let rejected = ended(10, 0, Stage::SynSent, s);
    assert_eq!(
        on_syn(Some(&rejected), 10, INGRESS, s + s / 2),
        SynDecision::Retransmit
    );
    assert_eq!(
        on_syn(Some(&rejected), 10, Hook::new(7, false), s + 1),
        SynDecision::Duplicate
    );
    assert_eq!(
        on_syn(Some(&rejected), 11, INGRESS, s + 1),
        SynDecision::NewAttempt,
        "new ISN"
    );
    assert_eq!(
        on_syn(Some(&rejected), 10, INGRESS, s + linger),
        SynDecision::NewAttempt,
        "past remembering"
    );
    assert_eq!(
        on_synack(&rejected, 0, 11, EGRESS, s + 1),
        SynAckDecision::Unsolicited,
        "no SYN-ACK belonged to a rejected attempt"
    );
    assert_eq!(
        on_rst(&rejected, false, 0, 11, TCP_RST | TCP_ACK),
        RstDecision::AfterEnd
    );
    // Completed: the server's SYN-ACK again, the client's ACK again.
    let done = ended(10, 20, Stage::SynReceived, s);
    assert_eq!(
        on_synack(&done, 20, 11, EGRESS, s + 2 * s),
        SynAckDecision::Retransmit
    );
    assert_eq!(
        on_synack(&done, 20, 11, INGRESS, s + 1),
        SynAckDecision::Duplicate
    );
    assert_eq!(
        on_synack(&done, 21, 11, EGRESS, s + 1),
        SynAckDecision::Unsolicited
    );
    assert_eq!(
        on_synack(&done, 20, 12, EGRESS, s + 1),
        SynAckDecision::Unsolicited
    );
    assert_eq!(
        on_synack(&done, 20, 11, EGRESS, s + linger),
        SynAckDecision::Unsolicited
    );
    assert_eq!(on_ack(&done, 11, 21), AckDecision::Ignore);
    assert_eq!(
        on_syn(Some(&done), 10, INGRESS, s + 1),
        SynDecision::Retransmit
    );
}

#[test]
fn tombstones_make_late_segments_late() {
    let t = expired(10, 20);
    assert_eq!(
        on_syn(Some(&t), 10, INGRESS, 0),
        SynDecision::Late,
        "the client still retrying"
    );
    assert_eq!(
        on_syn(Some(&t), 99, INGRESS, 0),
        SynDecision::NewAttempt,
        "port reuse after a timeout"
    );
    assert_eq!(
        on_synack(&t, 20, 11, EGRESS, 0),
        SynAckDecision::Late,
        "the server still retrying"
    );
    assert_eq!(
        on_ack(&t, 11, 21),
        AckDecision::Ignore,
        "too late to complete"
    );
    assert_eq!(on_rst(&t, true, 11, 0, TCP_RST), RstDecision::Late);
    assert_eq!(on_rst(&t, false, 21, 0, TCP_RST), RstDecision::Late);
}

/// A SYN-ACK that carries data: the final ACK may acknowledge it (RFC
/// 9293's acceptable ACK in SYN-RECEIVED, y+1 up to y+1+len).
#[test]
fn a_final_ack_may_acknowledge_the_synack_data() {
    let (x, y) = (100u32, u32::MAX - 2); // y+1+len wraps
    let state = FlowState {
        synack_payload: 5,
        ..syn_received(x, y)
    };
    for acked in 0..=5u32 {
        let ack = y.wrapping_add(1).wrapping_add(acked);
        assert_eq!(on_ack(&state, x + 1, ack), AckDecision::Complete, "{acked}");
    }
    let past = y.wrapping_add(7);
    assert_eq!(on_ack(&state, x + 1, past), AckDecision::InvalidAck);
    assert_eq!(on_ack(&state, x + 1, y), AckDecision::InvalidAck);
    // Without data, y+1 only.
    let plain = syn_received(x, y);
    assert_eq!(
        on_ack(&plain, x + 1, y.wrapping_add(2)),
        AckDecision::InvalidAck
    );
}

/// A client's RST after the SYN-ACK is judged as the server's request
/// socket judges it: anywhere in the window the SYN-ACK advertised.
#[test]
fn a_client_rst_lands_anywhere_in_the_synack_window() {
    let (x, y) = (1000u32, 5000u32);
    let state = FlowState {
        synack_window: 64240,
        ..syn_received(x, y)
    };
    for seq in [x + 1, x + 2, x + 1 + 64240] {
        assert_eq!(
            on_rst(&state, true, seq, 0, TCP_RST),
            RstDecision::Aborted,
            "{seq}"
        );
    }
    for seq in [x, x + 1 + 64241, x.wrapping_sub(100)] {
        assert_eq!(
            on_rst(&state, true, seq, 0, TCP_RST),
            RstDecision::Invalid,
            "{seq}"
        );
    }
    // The server's RST is still judged at y+1 (or y) by the client.
    assert_eq!(
        on_rst(&state, false, y + 1, 0, TCP_RST),
        RstDecision::Aborted
    );
    assert_eq!(
        on_rst(&state, false, y + 50, 0, TCP_RST),
        RstDecision::Invalid
    );
}

/// Each invalid verdict's numbers: what the check wanted and what came.
#[test]
fn a_mismatch_names_the_field_the_value_wanted_and_the_value_seen() {
    let sent = syn_sent(100);
    let received = syn_received(100, 5000);
    let m = |counter, state: &FlowState, seq, ack| {
        mismatch(counter, state, seq, ack).map(|m| (m.field.name(), m.expected, m.got))
    };
    assert_eq!(
        m(Counter::InvalidSynAckAck, &sent, 5000, 7),
        Some(("ack", 101, 7))
    );
    assert_eq!(
        m(Counter::InvalidAckAck, &received, 101, 9),
        Some(("ack", 5001, 9))
    );
    assert_eq!(
        m(Counter::InvalidAckSeq, &received, 3, 5001),
        Some(("seq", received.synack_ack, 3))
    );
    assert_eq!(
        m(Counter::InvalidRst, &received, 4, 0),
        Some(("seq", received.synack_ack, 4))
    );
    assert_eq!(m(Counter::InvalidRst, &sent, 0, 6), Some(("ack", 101, 6)));
    assert_eq!(m(Counter::Completed, &received, 101, 5001), None);
}

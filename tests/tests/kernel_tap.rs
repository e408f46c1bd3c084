//! Tap mode on the real programs (BPF_PROG_TEST_RUN): mirrored traffic,
//! every segment through the ingress program, where a SYN-ACK may come
//! a little before the SYN it answers (two mirror ports, two queues).
use std::{thread, time::Duration};

use handshake_common::{counters::Counter, flow::Stage};
use handshake_tests::{
    cases::{In, X, Y, ack, client, syn, synack},
    tester::{Tester, run_steps},
};
use handshake_user::probe::LoadOptions;

use Counter as C;

fn tap() -> Tester {
    Tester::with(&LoadOptions {
        tap_reorder: true,
        ..LoadOptions::default()
    })
}

/// (attempts, SYN-ACKs, completed, unsolicited), over every family and
/// direction.
fn funnel(t: &Tester) -> (u64, u64, u64, u64) {
    let c = t.counters();
    (
        c.total(C::Attempts),
        c.total(C::SynAck),
        c.total(C::Completed),
        c.total(C::Unsolicited),
    )
}

/// A SYN-ACK just before its SYN: one attempt, its SYN-ACK, and the final
/// ACK completes it; nothing unsolicited.
#[test]
fn a_synack_just_before_its_syn_makes_one_handshake() {
    let c = client();
    let mut t = tap();
    run_steps(&mut t, &[In(synack(&c, Y, X + 1))]).expect("run");
    assert_eq!(funnel(&t), (0, 0, 0, 0), "counted nothing yet");
    assert_eq!(t.flows()[0].1.stage, Stage::SynAckFirst as u8);
    // (Reading the whole table takes longer than the 10 ms a SYN-ACK waits:
    // the pair runs in one go.)
    let mut t = tap();
    run_steps(
        &mut t,
        &[
            In(synack(&c, Y, X + 1)),
            In(syn(&c, X)),
            In(ack(&c, X + 1, Y + 1)),
        ],
    )
    .expect("run");
    assert_eq!(funnel(&t), (1, 1, 1, 0));
    assert_eq!(t.counters().total(C::RetransmitSyn), 0);
    assert!(t.flows().is_empty());
}

/// A SYN-ACK whose SYN never comes is unsolicited once the agent's scan
/// releases it, and its way is free.
#[test]
fn a_synack_alone_is_unsolicited_when_released() {
    let mut t = tap();
    run_steps(&mut t, &[In(synack(&client(), Y, X + 1))]).expect("run");
    let (key, state) = t.flows()[0];
    assert!(t.expire(&key, state.syn_ns));
    assert_eq!(funnel(&t), (0, 0, 0, 1));
    assert!(t.entries().is_empty(), "the way is free");
    // The same again, retransmitted while it waits: one unsolicited, one
    // retransmission.
    run_steps(
        &mut t,
        &[
            In(synack(&client(), Y, X + 1)),
            In(synack(&client(), Y, X + 1)),
        ],
    )
    .expect("run");
    assert_eq!(t.counters().total(C::RetransmitSynAck), 1);
    let (key, state) = t.flows()[0];
    assert!(t.expire(&key, state.syn_ns));
    assert_eq!(funnel(&t), (0, 0, 0, 2));
}

/// A SYN that is not the one acknowledged, or comes too late, starts its
/// own attempt; the SYN-ACK before it was unsolicited.
#[test]
fn another_syn_or_a_late_one_leaves_the_synack_unsolicited() {
    let mut t = tap();
    let c = client();
    run_steps(&mut t, &[In(synack(&c, Y, X + 1)), In(syn(&c, X + 500))]).expect("run");
    assert_eq!(funnel(&t), (1, 0, 0, 1));
    assert_eq!(t.flows()[0].1.stage, Stage::SynSent as u8);

    let mut t = tap();
    run_steps(&mut t, &[In(synack(&c, Y, X + 1))]).expect("run");
    // Past the reorder window (10 ms).
    thread::sleep(Duration::from_millis(30));
    run_steps(&mut t, &[In(syn(&c, X))]).expect("run");
    assert_eq!(funnel(&t), (1, 0, 0, 1));
}

/// Outside tap mode the order the host sees is the order that happened: a
/// SYN-ACK before any SYN is unsolicited at once, and waits for nothing.
#[test]
fn without_tap_mode_a_synack_first_is_unsolicited_at_once() {
    let mut t = Tester::new();
    let c = client();
    run_steps(&mut t, &[In(synack(&c, Y, X + 1))]).expect("run");
    assert_eq!(funnel(&t), (0, 0, 0, 1));
    assert!(t.entries().is_empty());
    run_steps(&mut t, &[In(syn(&c, X)), In(ack(&c, X + 1, Y + 1))]).expect("run");
    assert_eq!(funnel(&t), (1, 0, 0, 1));
}

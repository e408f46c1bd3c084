//! XDP on ingress and TC on egress, sharing one flow table: every TCP
//! three-way handshake the host sends or receives, validated leg by leg.
//!
//! The decisions live in `handshake_common::handshake`; this file only reads
//! packets, looks up and updates maps, and counts. No packet is ever dropped
//! or changed.
#![no_std]
#![no_main]
// atomic_xadd: the only atomic read-modify-write the bpf target offers.
#![expect(
    internal_features,
    reason = "core_intrinsics is how Rust reaches BPF atomic add"
)]
#![feature(core_intrinsics)]

// The benchmarks' own programs: only in the object `cargo xtask bench`
// builds (feature `bench`), never in the agent's.
#[cfg(feature = "bench")]
mod bench;
mod diag;
mod maps;
mod view;

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use handshake_common::{
    counters::{Counter, Direction, Family},
    expire::{EXPIRED, ExpireRequest, NOT_EXPIRED},
    flow::{FlowKey, FlowState, Hook, Stage},
    handshake::{
        AckDecision, RstDecision, SegmentKind, SynAckDecision, SynDecision, classify, on_ack,
        on_rst, on_syn, on_synack,
    },
    histogram::Leg,
    parse::{PacketView as _, Parsed, TcpSegment, parse_ethernet, screen::ordinary_ack_slot},
};

use crate::diag::Diagnose;
use crate::{
    maps::{
        Funnel, count, count_listener, end_flow, entomb, find_flow, iface_slot, insert_new_flow,
        maybe_pending, now_ns, pending_enter, pending_leave, place_of, record_latency, remove_flow,
        slot_pending, tap_reorder, warm_pending_slot,
    },
    view::Frame,
};

#[xdp]
pub fn handshake_ingress(ctx: XdpContext) -> u32 {
    let frame = Frame::of_xdp(&ctx);
    observe_hook(
        &ctx,
        frame,
        Hook::new(ctx.ingress_ifindex() as u32, false),
        || frame,
    );
    xdp_action::XDP_PASS
}

/// Bytes of headers we may read: Ethernet, two VLAN tags, IPv6 with the
/// longest extension chain we walk, TCP. An skb can hold some of them
/// outside the linear area that a TC program's direct packet access reaches.
const HEADROOM_NEEDED: u32 = 256;

/// Returns TC_ACT_UNSPEC (TCX_NEXT): let any program after us decide; with
/// none, the packet goes on. TC_ACT_OK would skip them (a policy program,
/// say), which a monitor must never do.
#[classifier]
pub fn handshake_egress(ctx: TcContext) -> i32 {
    observe_hook(&ctx, Frame::of_skb(&ctx), tc_hook(&ctx, true), || {
        linear_headers(&ctx)
    });
    TC_ACT_UNSPEC
}

/// The ingress program where XDP would run in generic (skb) mode: veth, lo,
/// and drivers without native XDP. There the packet is an skb already, and
/// generic XDP first copies every cloned one (every TCP transmission a host
/// sends itself is a clone) into a fresh buffer; TC reads the skb as it is.
/// Same parse, same maps, same decisions as [`handshake_ingress`].
#[classifier]
pub fn handshake_tc_ingress(ctx: TcContext) -> i32 {
    observe_hook(&ctx, Frame::of_skb(&ctx), tc_hook(&ctx, false), || {
        linear_headers(&ctx)
    });
    TC_ACT_UNSPEC
}

/// The frame of a TC program, its headers made linear where they were not.
/// Only the full parse needs it: a data segment the screen clears (most
/// frames) skips the test, which costs about 1 ns (B1, paired runs).
#[inline(always)]
fn linear_headers(ctx: &TcContext) -> Frame {
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < HEADROOM_NEEDED && linear < ctx.len() {
        // Makes the headers linear; the packet's bytes are unchanged. On
        // failure we parse what is linear and count what does not fit.
        let _ = ctx.pull_data(HEADROOM_NEEDED.min(ctx.len()));
    }
    Frame::of_skb(ctx)
}

/// The hook a TC program runs at: the skb's interface, and the direction
/// it was attached in.
#[inline(always)]
fn tc_hook(ctx: &TcContext, egress: bool) -> Hook {
    // SAFETY: the context pointer is the kernel's __sk_buff for this run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    Hook::new(ifindex, egress)
}

/// Never attached. The agent runs it with BPF_PROG_TEST_RUN, the "packet"
/// being an `ExpireRequest`: to expire one handshake that timed out (count
/// it, leave a tombstone) or to forget a tombstone, all inside the kernel
/// (see `handshake_common::expire`).
#[xdp]
pub fn handshake_expire(ctx: XdpContext) -> u32 {
    let frame = Frame::of_xdp(&ctx);
    let Some(request) = frame.read::<ExpireRequest>(0) else {
        return NOT_EXPIRED;
    };
    let Some(found) = find_flow(&request.key) else {
        return NOT_EXPIRED;
    };
    // SAFETY: a live map value; only the agent runs this program, one
    // request at a time.
    let state = unsafe { &mut *found.state() };
    if state.syn_ns != request.syn_ns {
        return NOT_EXPIRED;
    }
    if state.stage == Stage::SynAckFirst as u8 {
        // Tap mode: a SYN-ACK whose SYN never came. Counted now, and its way
        // freed: there is no handshake to remember.
        let (slot, direction) = (u32::from(state.iface_slot), state.direction);
        if !remove_flow(&found) {
            return NOT_EXPIRED;
        }
        count(
            slot,
            Family::from_u8(request.key.family),
            Direction::from_u8(direction),
            Counter::Unsolicited,
        );
        return EXPIRED;
    }
    let tombstone = state.is_tombstone();
    if request.forget != 0 {
        return if tombstone && remove_flow(&found) {
            EXPIRED
        } else {
            NOT_EXPIRED
        };
    }
    if tombstone || !entomb(&found) {
        return NOT_EXPIRED;
    }
    let was_received = state.stage == Stage::SynReceived as u8;
    state.stage = Stage::Expired as u8;
    let counter = if was_received {
        pending_leave(&request.key);
        Counter::TimeoutSynReceived
    } else {
        Counter::TimeoutSynSent
    };
    let family = Family::from_u8(request.key.family);
    count(
        u32::from(state.iface_slot),
        family,
        Direction::from_u8(state.direction),
        counter,
    );
    EXPIRED
}

/// [`observe`], with diagnostic events when they are on. Two copies, of
/// which the verifier keeps one: the silent one carries no trace of the
/// events (a single copy with the calls merely skipped cost a new flow
/// some 20 ns in spills, BENCHMARKS.md B1).
#[inline(always)]
fn observe_hook<C: EbpfContext>(ctx: &C, frame: Frame, hook: Hook, full: impl FnOnce() -> Frame) {
    if diag::enabled() {
        observe_recorded(frame, hook, full);
        diag::flush(ctx);
    } else {
        observe(&diag::Silent, frame, hook, full);
    }
}

/// The recording copy, out of line, and the event logged after it returns:
/// each has a frame of its own, where one calling the other would stack
/// both past the 512 bytes the verifier allows a chain of calls.
#[inline(never)]
fn observe_recorded(frame: Frame, hook: Hook, full: impl FnOnce() -> Frame) {
    observe(&diag::Recording, frame, hook, full);
}

/// What both hooks do with a frame: count it, screen it, and only if the
/// screen does not clear it, parse `full()` (the same frame, its headers
/// made linear where a TC program needs that) and follow the handshake.
#[inline(always)]
fn observe<D: Diagnose>(diag: &D, frame: Frame, hook: Hook, full: impl FnOnce() -> Frame) {
    let egress = hook.egress != 0;
    let slot = iface_slot(hook.ifindex);
    // Every frame is counted once, up front, under the hook's direction and
    // the IPv4 slot (the agent labels packets by hook and interface only):
    // one counter update whatever the frame turns out to be, started before
    // the parse so the two overlap.
    let hook_direction = Direction::of_segment(egress, true);
    count(slot, Family::Ipv4, hook_direction, Counter::Packets);
    // Most frames are segments of open connections: the screen reads the
    // usual layouts at fixed offsets and lets the ones the pending filter
    // clears go without the full parse. Anything else, or a segment whose
    // slot is pending, takes the full path below.
    if let Some(pending) = ordinary_ack_slot(&frame)
        && !slot_pending(pending)
    {
        return;
    }
    let seg = match parse_ethernet(&full()) {
        Ok(Parsed::Tcp(seg)) => seg,
        Ok(Parsed::NotTcp) => return,
        Ok(Parsed::Fragment) => {
            count(slot, Family::Ipv4, hook_direction, Counter::Fragments);
            return;
        }
        Err(e) => {
            count(slot, Family::Ipv4, hook_direction, e.counter());
            return;
        }
    };
    match classify(seg.flags) {
        SegmentKind::Syn => on_syn_segment(&seg, hook, slot),
        SegmentKind::SynAck => on_synack_segment(diag, &seg, hook, slot),
        SegmentKind::Ack => on_ack_segment(diag, &seg),
        SegmentKind::Rst => on_rst_segment(diag, &seg),
        SegmentKind::Other => {}
    }
}

#[inline(always)]
fn on_syn_segment(seg: &TcpSegment, hook: Hook, slot: u32) {
    let key = FlowKey::of_segment(seg);
    warm_pending_slot(&key);
    let direction = Direction::of_segment(hook.egress != 0, true);
    count(slot, seg.family, direction, Counter::SynPackets);
    let Some(place) = place_of(&key) else {
        return;
    };
    let found = place.find(&key);
    // SAFETY: the value is copied out at once; a concurrent update can at
    // worst make this SYN look new or retransmitted, never corrupt memory.
    let existing = found.map(|f| unsafe { *f.state() });
    // The clock only where the decision needs it (an ended handshake's
    // age, or how long a SYN-ACK seen first has waited): a retransmitted
    // SYN does not pay for it.
    let ended_check = existing
        .filter(|s| s.stage == Stage::Ended as u8 || s.stage == Stage::SynAckFirst as u8)
        .map(|_| now_ns());
    let decision = on_syn(existing.as_ref(), seg.seq, hook, ended_check.unwrap_or(0));
    match decision {
        SynDecision::Retransmit => count(slot, seg.family, direction, Counter::RetransmitSyn),
        SynDecision::Duplicate => count(slot, seg.family, direction, Counter::DuplicateObservation),
        SynDecision::Late => {
            let old = existing.map_or(slot, |s| u32::from(s.iface_slot));
            count(old, seg.family, direction, Counter::LateSegment);
        }
        SynDecision::Reordered => {
            if let Some(f) = found {
                syn_after_its_synack(&f, seg, &key, hook, slot, direction);
            }
        }
        SynDecision::NewAttempt | SynDecision::Supersede(_) => {
            if let (SynDecision::Supersede(stage), Some(old)) = (decision, existing) {
                // (on_syn never supersedes a tombstone: a new ISN on one is a
                // plain new attempt.)
                let superseded = match stage {
                    Stage::SynSent => Some(Counter::SupersededSynSent),
                    Stage::SynReceived => Some(Counter::SupersededSynReceived),
                    // A SYN-ACK that waited for another SYN (tap mode): it
                    // was unsolicited after all.
                    Stage::SynAckFirst => Some(Counter::Unsolicited),
                    Stage::Expired | Stage::Ended => None,
                };
                if let Some(counter) = superseded {
                    count(
                        u32::from(old.iface_slot),
                        seg.family,
                        Direction::from_u8(old.direction),
                        counter,
                    );
                }
                if stage == Stage::SynReceived {
                    pending_leave(&key);
                }
            }
            if direction == Direction::Inbound {
                count_listener(key.dst_port, Funnel::Attempt);
            }
            let state = FlowState {
                syn_ns: ended_check.unwrap_or_else(now_ns),
                client_isn: seg.seq,
                syn_payload: seg.payload_len,
                stage: Stage::SynSent as u8,
                direction: direction as u8,
                syn_hook: hook,
                iface_slot: slot as u8,
                ..FlowState::default()
            };
            insert_new_flow(&place, &key, &state, seg.family, direction, found);
        }
    }
}

#[inline(always)]
fn on_synack_segment<D: Diagnose>(diag: &D, seg: &TcpSegment, hook: Hook, slot: u32) {
    // The SYN-ACK travels responder -> initiator: its flow's key is reversed.
    let key = FlowKey::of_segment(seg).reversed();
    let Some(place) = place_of(&key) else {
        return;
    };
    let Some(found) = place.find(&key) else {
        if !(tap_reorder() && wait_for_syn(&place, &key, seg, hook, slot)) {
            unsolicited(diag, seg, hook, slot);
        }
        return;
    };
    // SAFETY: map values stay valid for the program's run; see
    // `handshake_common::table` for why a racing update is tolerable.
    let state = unsafe { &mut *found.state() };
    let direction = Direction::from_u8(state.direction);
    let flow_slot = u32::from(state.iface_slot);
    // As for a SYN: the clock for an ended handshake's age, or an accepted
    // SYN-ACK's time, not for a retransmission.
    let ended_check = (state.stage == Stage::Ended as u8).then(now_ns);
    match on_synack(state, seg.seq, seg.ack, hook, ended_check.unwrap_or(0)) {
        SynAckDecision::Accept => {
            // Raise the filter before the stage: the final ACK must never
            // find the slot at 0 with the flow already in syn_received.
            pending_enter(&key);
            if direction == Direction::Inbound {
                count_listener(key.dst_port, Funnel::SynAck);
            }
            let now = now_ns();
            state.server_isn = seg.seq;
            state.synack_ack = seg.ack;
            state.synack_payload = seg.payload_len;
            state.synack_window = seg.window;
            state.synack_ns = now;
            state.synack_hook = hook;
            state.stage = Stage::SynReceived as u8;
            count(flow_slot, seg.family, direction, Counter::SynAck);
            record_latency(direction, Leg::SynToSynAck, now.wrapping_sub(state.syn_ns));
        }
        SynAckDecision::Retransmit => {
            count(flow_slot, seg.family, direction, Counter::RetransmitSynAck)
        }
        SynAckDecision::Duplicate => count(
            flow_slot,
            seg.family,
            direction,
            Counter::DuplicateObservation,
        ),
        SynAckDecision::InvalidAck => {
            count(flow_slot, seg.family, direction, Counter::InvalidSynAckAck);
            diag.segment(Counter::InvalidSynAckAck, seg, Some(state));
        }
        SynAckDecision::InvalidSeq => {
            count(flow_slot, seg.family, direction, Counter::InvalidSynAckSeq);
            diag.segment(Counter::InvalidSynAckSeq, seg, Some(state));
        }
        SynAckDecision::Late => count(flow_slot, seg.family, direction, Counter::LateSegment),
        SynAckDecision::Unsolicited => unsolicited(diag, seg, hook, slot),
    }
}

/// Counts a SYN-ACK no handshake this side knows asked for, where it was
/// seen (it belongs to no flow's interface or direction).
#[inline(always)]
fn unsolicited<D: Diagnose>(diag: &D, seg: &TcpSegment, hook: Hook, slot: u32) {
    count(
        slot,
        seg.family,
        Direction::of_segment(hook.egress != 0, false),
        Counter::Unsolicited,
    );
    diag.segment(Counter::Unsolicited, seg, None);
}

/// Tap mode: a SYN-ACK with no SYN tracked waits in its flow's way for
/// the SYN a mirror may deliver just after it (`Stage::SynAckFirst`),
/// counted nothing yet. False if there was no way for it.
#[inline(always)]
fn wait_for_syn(
    place: &maps::Place,
    key: &FlowKey,
    seg: &TcpSegment,
    hook: Hook,
    slot: u32,
) -> bool {
    let now = now_ns();
    let state = FlowState {
        syn_ns: now,
        synack_ns: now,
        client_isn: seg.ack.wrapping_sub(1),
        server_isn: seg.seq,
        synack_ack: seg.ack,
        stage: Stage::SynAckFirst as u8,
        // Where and how an unsolicited SYN-ACK is counted, should it be one.
        direction: Direction::of_segment(hook.egress != 0, false) as u8,
        syn_hook: hook,
        synack_hook: hook,
        iface_slot: slot as u8,
        synack_payload: seg.payload_len,
        synack_window: seg.window,
        ..FlowState::default()
    };
    maps::insert_flow(place, key, &state)
}

/// Tap mode: the SYN of a SYN-ACK seen just before it. The pair counts as
/// an attempt and its SYN-ACK, as if they had come in order; the time
/// between them is unknown, so no SYN to SYN-ACK latency is recorded.
#[inline(always)]
fn syn_after_its_synack(
    found: &maps::Found,
    seg: &TcpSegment,
    key: &FlowKey,
    hook: Hook,
    slot: u32,
    direction: Direction,
) {
    // SAFETY: a live map value; see `handshake_common::table` on races.
    let state = unsafe { &mut *found.state() };
    count(slot, seg.family, direction, Counter::Attempts);
    pending_enter(key);
    if direction == Direction::Inbound {
        count_listener(key.dst_port, Funnel::Attempt);
        count_listener(key.dst_port, Funnel::SynAck);
    }
    state.client_isn = seg.seq;
    state.syn_payload = seg.payload_len;
    state.syn_hook = hook;
    state.direction = direction as u8;
    state.iface_slot = slot as u8;
    state.syn_ns = state.synack_ns;
    state.stage = Stage::SynReceived as u8;
    count(slot, seg.family, direction, Counter::SynAck);
}

/// Every ACK from an initiator could be a final ACK; the pending filter
/// spares most data segments the flow-table lookup.
#[inline(always)]
fn on_ack_segment<D: Diagnose>(diag: &D, seg: &TcpSegment) {
    if !maybe_pending(seg) {
        return;
    }
    let key = FlowKey::of_segment(seg);
    let Some(found) = find_flow(&key) else {
        return;
    };
    // SAFETY: copied out at once.
    let state = unsafe { *found.state() };
    let direction = Direction::from_u8(state.direction);
    let flow_slot = u32::from(state.iface_slot);
    match on_ack(&state, seg.seq, seg.ack) {
        AckDecision::Complete => {
            // Only the program that ends the handshake counts: the same ACK
            // seen at two hooks on two CPUs completes one handshake.
            let now = now_ns();
            if end_flow(&found, now) {
                pending_leave(&key);
                if direction == Direction::Inbound {
                    count_listener(key.dst_port, Funnel::Completed);
                }
                count(flow_slot, seg.family, direction, Counter::Completed);
                record_latency(
                    direction,
                    Leg::SynAckToAck,
                    now.wrapping_sub(state.synack_ns),
                );
            }
        }
        AckDecision::InvalidSeq => {
            count(flow_slot, seg.family, direction, Counter::InvalidAckSeq);
            diag.segment(Counter::InvalidAckSeq, seg, Some(&state));
        }
        AckDecision::InvalidAck => {
            count(flow_slot, seg.family, direction, Counter::InvalidAckAck);
            diag.segment(Counter::InvalidAckAck, seg, Some(&state));
        }
        AckDecision::Ignore => {}
    }
}

#[inline(always)]
fn on_rst_segment<D: Diagnose>(diag: &D, seg: &TcpSegment) {
    // A RST from the responder maps to the reversed key; from the initiator
    // to its own. Both keys hash alike: the same two buckets hold either.
    let forward = FlowKey::of_segment(seg);
    let from_responder = forward.reversed();
    let Some(place) = place_of(&forward) else {
        return;
    };
    let (key, found, from_initiator) = if let Some(f) = place.find(&from_responder) {
        (from_responder, f, false)
    } else {
        match place.find(&forward) {
            Some(f) => (forward, f, true),
            None => return,
        }
    };
    // SAFETY: copied out at once.
    let state = unsafe { *found.state() };
    let direction = Direction::from_u8(state.direction);
    let flow_slot = u32::from(state.iface_slot);
    let (counter, funnel) = match on_rst(&state, from_initiator, seg.seq, seg.ack, seg.flags) {
        RstDecision::Rejected => (Counter::Rejected, Funnel::Rejected),
        RstDecision::Aborted => (Counter::Aborted, Funnel::Aborted),
        RstDecision::Invalid => {
            count(flow_slot, seg.family, direction, Counter::InvalidRst);
            diag.segment(Counter::InvalidRst, seg, Some(&state));
            return;
        }
        RstDecision::Late => {
            count(flow_slot, seg.family, direction, Counter::LateSegment);
            return;
        }
        RstDecision::AfterEnd => return,
    };
    // Its end is stamped with the last time the handshake read (its SYN's
    // or SYN-ACK's): a RST then costs no clock read (a flood to a closed
    // port is one RST per SYN), and a retry half a second later is still
    // well inside the time an ended handshake is remembered.
    if end_flow(&found, state.syn_ns.max(state.synack_ns)) {
        if state.stage == Stage::SynReceived as u8 {
            pending_leave(&key);
        }
        if direction == Direction::Inbound {
            count_listener(key.dst_port, funnel);
        }
        count(flow_slot, seg.family, direction, counter);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any reachable panic path; this is never linked in.
    loop {}
}

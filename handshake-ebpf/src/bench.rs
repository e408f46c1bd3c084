//! The benchmarks' own programs (`cargo xtask bench`): empty baselines,
//! programs that step a word of the frame so that every run of a test run
//! sees a new flow, and parts of a new flow's work alone. Built only with
//! the `bench` feature, into the benchmarks' object; the agent's object has
//! none of them.
use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use handshake_common::{
    flow::{FlowKey, FlowState, Hook, Stage},
    parse::{Parsed, parse_ethernet},
};

use crate::{
    maps::{self, BENCH_STEP, now_ns, place_of},
    observe_hook, tc_hook,
    view::Frame,
};

/// An empty XDP program: what the benchmarks measure ours against, in the
/// same run (`cargo xtask bench`). Never attached by the agent.
#[xdp]
pub fn baseline_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The egress program's baseline, as [`baseline_xdp`].
#[classifier]
pub fn baseline_tc(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Benchmarks only, never attached: adds one to the big-endian 32-bit word
/// at byte `BENCH_STEP[0]` of the frame (an address), then does what the
/// ingress program does. Run with BPF_PROG_TEST_RUN's `repeat`, every run
/// sees the next flow: the per-packet cost of new flows, SYN-ACKs and
/// completing ACKs over a million runs, not one test-run syscall per flow.
/// [`bench_step_xdp`] does only the step: the baseline.
#[xdp]
pub fn bench_stepped_ingress(ctx: XdpContext) -> u32 {
    let frame = Frame::of_xdp(&ctx);
    bench_step(&frame);
    observe_hook(
        &ctx,
        frame,
        Hook::new(ctx.ingress_ifindex() as u32, false),
        || frame,
    );
    xdp_action::XDP_PASS
}

/// The egress program's [`bench_stepped_ingress`].
#[classifier]
pub fn bench_stepped_egress(ctx: TcContext) -> i32 {
    let frame = Frame::of_skb(&ctx);
    bench_step(&frame);
    observe_hook(&ctx, frame, tc_hook(&ctx, true), || frame);
    TC_ACT_UNSPEC
}

/// The step alone: the baseline of [`bench_stepped_ingress`].
#[xdp]
pub fn bench_step_xdp(ctx: XdpContext) -> u32 {
    bench_step(&Frame::of_xdp(&ctx));
    xdp_action::XDP_PASS
}

/// The step alone: the baseline of [`bench_stepped_egress`].
#[classifier]
pub fn bench_step_tc(ctx: TcContext) -> i32 {
    bench_step(&Frame::of_skb(&ctx));
    TC_ACT_UNSPEC
}

/// Benchmarks only: the step, the parse and the flow-table lookup and
/// insert a new flow needs, nothing else (no clock, no counters). Its cost
/// over [`bench_step_xdp`] is the table's share of a new flow's.
#[xdp]
pub fn bench_insert_only(ctx: XdpContext) -> u32 {
    let frame = Frame::of_xdp(&ctx);
    bench_step(&frame);
    if let Ok(Parsed::Tcp(seg)) = parse_ethernet(&frame) {
        let key = FlowKey::of_segment(&seg);
        if let Some(place) = place_of(&key)
            && place.find(&key).is_none()
        {
            let state = FlowState {
                stage: Stage::SynSent as u8,
                ..FlowState::default()
            };
            maps::insert_flow(&place, &key, &state);
        }
    }
    xdp_action::XDP_PASS
}

/// Benchmarks only: reads the clock, as a new flow, a SYN-ACK and a
/// completing ACK each do once, and nothing else. Its cost over
/// [`baseline_xdp`] is the clock's share of theirs: one helper call, which
/// no other step of theirs is (the verifier inlines the array lookups).
#[xdp]
pub fn bench_clock_xdp(_ctx: XdpContext) -> u32 {
    // The call cannot be dropped: to the compiler a helper is an opaque
    // function pointer.
    let _ = now_ns();
    xdp_action::XDP_PASS
}

#[inline(always)]
fn bench_step(frame: &Frame) {
    let offset = BENCH_STEP.get(0).copied().unwrap_or(0) as usize & 0xff;
    let at = frame.start + offset;
    if at + 4 <= frame.end {
        // SAFETY: inside the frame (checked just above); only benchmarks run
        // this, on frames they made.
        unsafe {
            let word = at as *mut u32;
            word.write_unaligned(u32::from_be(word.read_unaligned()).wrapping_add(1).to_be());
        }
    }
}

//! Diagnostic events: for a segment of a handshake counted invalid or
//! unsolicited, one aya-log record saying which flow, which check, what it
//! wanted and what came. Off unless the agent loads the programs with
//! `DIAGNOSTICS` set (`run --log.level debug`). The programs hold two copies
//! of their path, one [`Logging`] and one [`Silent`]; `DIAGNOSTICS` is a
//! frozen constant, so the verifier keeps one, and the silent one has no
//! trace of the events.
//! At most [`EVENTS_PER_SECOND`] per CPU: a flood of bad segments costs a
//! counter each, not a record each.
use aya_ebpf::{EbpfContext, macros::map, maps::PerCpuArray};
use aya_log_ebpf::debug;
use handshake_common::{
    counters::{Counter, Family},
    flow::FlowState,
    handshake::{FloodGuard, mismatch},
    parse::TcpSegment,
};

use crate::maps::now_ns;

/// Set at load time by the agent: emit diagnostic events.
#[unsafe(no_mangle)]
static DIAGNOSTICS: u8 = 0;

/// Records per CPU per second, at most.
const EVENTS_PER_SECOND: u64 = 20;

#[map]
static DIAG_GUARD: PerCpuArray<FloodGuard> = PerCpuArray::with_max_entries(1, 0);

/// Where a program reports a segment counted invalid or unsolicited.
pub trait Diagnose {
    /// `seg`, counted `counter`, which `what` names; `state` is its flow's
    /// before the segment, when there is one.
    fn segment(
        &self,
        what: &'static str,
        counter: Counter,
        seg: &TcpSegment,
        state: Option<&FlowState>,
    );
}

/// Diagnostics off: nothing.
pub struct Silent;

impl Diagnose for Silent {
    #[inline(always)]
    fn segment(&self, _: &'static str, _: Counter, _: &TcpSegment, _: Option<&FlowState>) {}
}

/// Diagnostics on: a record for each, through the program's context.
pub struct Logging<'a, C>(pub &'a C);

impl<C: EbpfContext> Diagnose for Logging<'_, C> {
    #[inline(always)]
    fn segment(
        &self,
        what: &'static str,
        counter: Counter,
        seg: &TcpSegment,
        state: Option<&FlowState>,
    ) {
        segment(self.0, what, counter, seg, state);
    }
}

/// Whether diagnostic events are on: a frozen constant, so that the
/// verifier keeps one copy of the programs' path.
#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: a read of a constant the loader may have rewritten.
    unsafe { core::ptr::read_volatile(&DIAGNOSTICS) != 0 }
}

/// A record for `seg` (see [`Diagnose::segment`]). Out of line: one copy
/// of the formatting code, whatever calls it.
#[inline(never)]
fn segment<C: EbpfContext>(
    ctx: &C,
    what: &str,
    counter: Counter,
    seg: &TcpSegment,
    state: Option<&FlowState>,
) {
    let admitted = match DIAG_GUARD.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        Some(guard) => unsafe { (*guard).admit(now_ns(), 1_000_000_000, EVENTS_PER_SECOND) },
        None => false,
    };
    if !admitted {
        return;
    }
    let v4 = seg.family == Family::Ipv4;
    let (src4, dst4) = (u32::from_be(seg.src_addr[0]), u32::from_be(seg.dst_addr[0]));
    let (src6, dst6) = (bytes(&seg.src_addr), bytes(&seg.dst_addr));
    let (sport, dport, seq, ack) = (seg.src_port, seg.dst_port, seg.seq, seg.ack);
    match state.and_then(|s| mismatch(counter, s, seq, ack)) {
        Some(m) => {
            let (field, expected, got) = (m.field.name(), m.expected, m.got);
            if v4 {
                debug!(
                    ctx,
                    "{} {:i}:{} > {:i}:{} seq {} ack {}: expected {} {}, got {}",
                    what,
                    src4,
                    sport,
                    dst4,
                    dport,
                    seq,
                    ack,
                    field,
                    expected,
                    got
                );
            } else {
                debug!(
                    ctx,
                    "{} [{:i}]:{} > [{:i}]:{} seq {} ack {}: expected {} {}, got {}",
                    what,
                    src6,
                    sport,
                    dst6,
                    dport,
                    seq,
                    ack,
                    field,
                    expected,
                    got
                );
            }
        }
        None => {
            if v4 {
                debug!(
                    ctx,
                    "{} {:i}:{} > {:i}:{} seq {} ack {}", what, src4, sport, dst4, dport, seq, ack
                );
            } else {
                debug!(
                    ctx,
                    "{} [{:i}]:{} > [{:i}]:{} seq {} ack {}",
                    what,
                    src6,
                    sport,
                    dst6,
                    dport,
                    seq,
                    ack
                );
            }
        }
    }
}

/// An IPv6 address as its 16 bytes, in wire order.
#[inline(always)]
fn bytes(words: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

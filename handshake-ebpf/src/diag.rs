//! Diagnostic events: for a segment of a handshake counted invalid or
//! unsolicited, one aya-log record saying which flow, which check, what it
//! wanted and what came. Off unless the agent loads the programs with
//! `DIAGNOSTICS` set (`run --log.level debug`).
//!
//! The programs hold two copies of their path: one [`Silent`], one
//! [`Recording`] the event in a per-CPU slot, logged by [`flush`] once the
//! path returns. `DIAGNOSTICS` is a frozen constant, so the verifier keeps
//! one copy, and the silent one has no trace of the events. At most
//! [`EVENTS_PER_SECOND`] per CPU: a flood of bad segments costs a counter
//! each, not a record each.
use aya_ebpf::{EbpfContext, macros::map, maps::PerCpuArray};
use aya_log_ebpf::debug;
use handshake_common::{
    counters::{Counter, Family},
    flow::FlowState,
    handshake::{Field, FloodGuard, mismatch},
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

/// What went wrong, one format string each.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    None,
    Unsolicited,
    SynAckAck,
    SynAckSeq,
    AckSeq,
    AckAck,
    RstSeq,
    RstAck,
}

/// The event of the segment being handled, in a per-CPU slot: a program
/// handles one segment at a time on its CPU.
#[repr(C)]
pub struct Event {
    src: [u32; 4],
    dst: [u32; 4],
    seq: u32,
    ack: u32,
    expected: u32,
    got: u32,
    sport: u16,
    dport: u16,
    kind: u8,
    family: u8,
    _pad: u16,
}

#[map]
static DIAG_EVENT: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// Where a program reports a segment counted invalid or unsolicited.
pub trait Diagnose {
    /// `seg`, counted `counter`; `state` is its flow's before the segment,
    /// when there is one.
    fn segment(&self, counter: Counter, seg: &TcpSegment, state: Option<&FlowState>);
}

/// Diagnostics off: nothing.
pub struct Silent;

impl Diagnose for Silent {
    #[inline(always)]
    fn segment(&self, _: Counter, _: &TcpSegment, _: Option<&FlowState>) {}
}

/// Diagnostics on: the event goes to this CPU's slot, for [`flush`].
pub struct Recording;

impl Diagnose for Recording {
    #[inline(always)]
    fn segment(&self, counter: Counter, seg: &TcpSegment, state: Option<&FlowState>) {
        let Some(event) = DIAG_EVENT.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: this CPU's slot.
        let e = unsafe { &mut *event };
        let m = state.and_then(|s| mismatch(counter, s, seg.seq, seg.ack));
        let (expected, got) = m.map_or((0, 0), |m| (m.expected, m.got));
        let seq_field = m.is_some_and(|m| m.field == Field::Seq);
        e.kind = match counter {
            Counter::Unsolicited => Kind::Unsolicited,
            Counter::InvalidSynAckAck => Kind::SynAckAck,
            Counter::InvalidSynAckSeq => Kind::SynAckSeq,
            Counter::InvalidAckSeq => Kind::AckSeq,
            Counter::InvalidAckAck => Kind::AckAck,
            Counter::InvalidRst if seq_field => Kind::RstSeq,
            Counter::InvalidRst => Kind::RstAck,
            _ => Kind::None,
        } as u8;
        e.src = seg.src_addr;
        e.dst = seg.dst_addr;
        e.sport = seg.src_port;
        e.dport = seg.dst_port;
        e.seq = seg.seq;
        e.ack = seg.ack;
        e.expected = expected;
        e.got = got;
        e.family = seg.family as u8;
    }
}

/// Whether diagnostic events are on: a frozen constant, so that the
/// verifier keeps one copy of the programs' path.
#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: a read of a constant the loader may have rewritten.
    unsafe { core::ptr::read_volatile(&DIAGNOSTICS) != 0 }
}

/// One line per kind and family: aya-log's format strings are literals.
/// The flow and the segment's numbers, then `extra` (what was expected and
/// what came, for a check that failed).
macro_rules! event_line {
    ($ctx:expr, $e:expr, $v4:tt, $v6:tt $(, $extra:expr)*) => {
        if $e.family == Family::Ipv4 as u8 {
            debug!(
                $ctx,
                $v4,
                u32::from_be($e.src[0]),
                $e.sport,
                u32::from_be($e.dst[0]),
                $e.dport,
                $e.seq,
                $e.ack
                $(, $extra)*
            )
        } else {
            debug!(
                $ctx,
                $v6,
                bytes(&$e.src),
                $e.sport,
                bytes(&$e.dst),
                $e.dport,
                $e.seq,
                $e.ack
                $(, $extra)*
            )
        }
    };
}

/// Logs this CPU's event, if the path just run recorded one, within the
/// rate limit.
#[inline(never)]
pub fn flush<C: EbpfContext>(ctx: &C) {
    let Some(event) = DIAG_EVENT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let e = unsafe { &mut *event };
    let kind = e.kind;
    if kind == Kind::None as u8 {
        return;
    }
    e.kind = Kind::None as u8;
    let admitted = match DIAG_GUARD.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        Some(guard) => unsafe { (*guard).admit(now_ns(), 1_000_000_000, EVENTS_PER_SECOND) },
        None => false,
    };
    if !admitted {
        return;
    }
    if kind == Kind::Unsolicited as u8 {
        event_line!(
            ctx,
            e,
            "unsolicited SYN-ACK {:i}:{} > {:i}:{} seq {} ack {}",
            "unsolicited SYN-ACK [{:i}]:{} > [{:i}]:{} seq {} ack {}"
        );
    } else if kind == Kind::SynAckAck as u8 {
        event_line!(
            ctx,
            e,
            "invalid SYN-ACK {:i}:{} > {:i}:{} seq {} ack {}: expected ack {}, got {}",
            "invalid SYN-ACK [{:i}]:{} > [{:i}]:{} seq {} ack {}: expected ack {}, got {}",
            e.expected,
            e.got
        );
    } else if kind == Kind::SynAckSeq as u8 {
        event_line!(
            ctx,
            e,
            "invalid SYN-ACK {:i}:{} > {:i}:{} seq {} ack {}: expected seq {}, got {}",
            "invalid SYN-ACK [{:i}]:{} > [{:i}]:{} seq {} ack {}: expected seq {}, got {}",
            e.expected,
            e.got
        );
    } else if kind == Kind::AckSeq as u8 {
        event_line!(
            ctx,
            e,
            "invalid final ACK {:i}:{} > {:i}:{} seq {} ack {}: expected seq {}, got {}",
            "invalid final ACK [{:i}]:{} > [{:i}]:{} seq {} ack {}: expected seq {}, got {}",
            e.expected,
            e.got
        );
    } else if kind == Kind::AckAck as u8 {
        event_line!(
            ctx,
            e,
            "invalid final ACK {:i}:{} > {:i}:{} seq {} ack {}: expected ack {}, got {}",
            "invalid final ACK [{:i}]:{} > [{:i}]:{} seq {} ack {}: expected ack {}, got {}",
            e.expected,
            e.got
        );
    } else if kind == Kind::RstSeq as u8 {
        event_line!(
            ctx,
            e,
            "invalid RST {:i}:{} > {:i}:{} seq {} ack {}: expected seq {}, got {}",
            "invalid RST [{:i}]:{} > [{:i}]:{} seq {} ack {}: expected seq {}, got {}",
            e.expected,
            e.got
        );
    } else {
        event_line!(
            ctx,
            e,
            "invalid RST {:i}:{} > {:i}:{} seq {} ack {}: expected ack {}, got {}",
            "invalid RST [{:i}]:{} > [{:i}]:{} seq {} ack {}: expected ack {}, got {}",
            e.expected,
            e.got
        );
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

//! The handshake state machine, as pure decisions over a flow's state and a
//! segment. The kernel programs look up the entry, ask these functions what
//! to do, then count and update; keeping the decisions here means every
//! transition is unit- and property-tested on the host.
//!
//! ```text
//!   SYN (seq x)                      -> syn_sent        (attempt)
//!   SYN-ACK (seq y, ack x+1)         -> syn_received    (synack)
//!   ACK (seq x+1, ack y+1)           -> freed           (completed)
//!   RST from responder, in syn_sent  -> freed           (rejected)
//!   RST from either side otherwise   -> freed           (aborted)
//! ```
//!
//! "Freed" is [`Stage::Ended`]: a tombstone that, for a few seconds, takes
//! what the peers send again for retransmissions, not a new handshake.

use crate::{
    counters::Counter,
    flow::{FlowState, Hook, Stage},
    parse::{TCP_ACK, TCP_RST, TCP_SYN},
};

/// Which leg of the handshake a segment could be, from its flags alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    Syn,
    SynAck,
    Rst,
    /// ACK set, SYN and RST clear: a final ACK, or (mostly) any other segment.
    Ack,
    /// No ACK, no SYN, no RST: nothing to do with a handshake.
    Other,
}

#[inline(always)]
pub const fn classify(flags: u8) -> SegmentKind {
    if flags & TCP_RST != 0 {
        SegmentKind::Rst
    } else if flags & TCP_SYN != 0 {
        if flags & TCP_ACK != 0 {
            SegmentKind::SynAck
        } else {
            SegmentKind::Syn
        }
    } else if flags & TCP_ACK != 0 {
        SegmentKind::Ack
    } else {
        SegmentKind::Other
    }
}

/// What a SYN means for its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynDecision {
    /// No handshake tracked on this key: a new attempt.
    NewAttempt,
    /// Same ISN, same hook: the client retransmitted its SYN.
    Retransmit,
    /// Same ISN, another hook: the same packet seen a second time on this host.
    Duplicate,
    /// A new ISN on a live key (port reuse): the old attempt, at this stage,
    /// is given up and a new one starts.
    Supersede(Stage),
    /// The same ISN as an attempt already counted as a timeout: the client
    /// is still retrying it.
    Late,
    /// Tap mode: the SYN that a SYN-ACK seen just before it acknowledges
    /// ([`Stage::SynAckFirst`]): the two count as the attempt and its
    /// SYN-ACK, the handshake now waits for its final ACK.
    Reordered,
}

/// Whether a segment seen at `hook` is the one seen at `first` again: a
/// retransmission (same hook, later) or the same packet at a second hook.
#[inline(always)]
fn again(first: Hook, hook: Hook) -> SynDecision {
    if first == hook {
        SynDecision::Retransmit
    } else {
        SynDecision::Duplicate
    }
}

#[inline(always)]
pub fn on_syn(existing: Option<&FlowState>, isn: u32, hook: Hook, now_ns: u64) -> SynDecision {
    let Some(state) = existing else {
        return SynDecision::NewAttempt;
    };
    let Some(stage) = Stage::from_u8(state.stage) else {
        return SynDecision::NewAttempt;
    };
    if stage == Stage::Ended {
        // The client retrying the attempt that just ended (connect() again
        // after a RST, same ISN), or the handshake seen a second time.
        return if state.ended_recently(now_ns) && state.client_isn == isn {
            again(state.syn_hook, hook)
        } else {
            SynDecision::NewAttempt
        };
    }
    if stage == Stage::SynAckFirst {
        // The SYN of a SYN-ACK the mirror delivered first, if it comes soon
        // and is the one acknowledged; else that SYN-ACK was unsolicited.
        return if now_ns.wrapping_sub(state.synack_ns) <= crate::expire::REORDER_WINDOW_NS
            && state.synack_ack == isn.wrapping_add(1)
        {
            SynDecision::Reordered
        } else {
            SynDecision::Supersede(Stage::SynAckFirst)
        };
    }
    if stage == Stage::Expired {
        // A new ISN on a tombstone starts afresh; the old attempt is counted.
        return if state.client_isn == isn {
            SynDecision::Late
        } else {
            SynDecision::NewAttempt
        };
    }
    if state.client_isn != isn {
        SynDecision::Supersede(stage)
    } else {
        again(state.syn_hook, hook)
    }
}

/// What a SYN-ACK means for the flow it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynAckDecision {
    /// First valid SYN-ACK: move to syn_received with this server ISN.
    Accept,
    Retransmit,
    Duplicate,
    /// ack is neither x+1 nor, after Fast Open data, x+1+len.
    InvalidAck,
    /// A second SYN-ACK with another server ISN.
    InvalidSeq,
    /// For an attempt already counted as a timeout.
    Late,
    /// For no handshake this side knows: none tracked, or one that ended
    /// without this SYN-ACK (a rejected attempt, or past remembering).
    Unsolicited,
}

/// Whether `ack` acknowledges the SYN: x+1, or x+1+len when the SYN carried
/// Fast Open data that the server accepted.
#[inline(always)]
pub const fn acks_syn(state: &FlowState, ack: u32) -> bool {
    let next = state.client_isn.wrapping_add(1);
    ack == next || (state.syn_payload != 0 && ack == next.wrapping_add(state.syn_payload as u32))
}

#[inline(always)]
pub fn on_synack(state: &FlowState, seq: u32, ack: u32, hook: Hook, now_ns: u64) -> SynAckDecision {
    if state.stage == Stage::Expired as u8 {
        return SynAckDecision::Late;
    }
    if state.stage == Stage::SynAckFirst as u8 {
        // Still waiting for its SYN: the same SYN-ACK again, or another,
        // which nothing asked for either.
        return if seq == state.server_isn && ack == state.synack_ack {
            synack_again(state.synack_hook, hook)
        } else {
            SynAckDecision::Unsolicited
        };
    }
    if state.stage == Stage::Ended as u8 {
        // The server retransmitting its SYN-ACK after the final ACK (lost
        // past the point we watch), or the handshake seen a second time.
        return if state.ended_recently(now_ns)
            && state.ended_from == Stage::SynReceived as u8
            && seq == state.server_isn
            && acks_syn(state, ack)
        {
            synack_again(state.synack_hook, hook)
        } else {
            SynAckDecision::Unsolicited
        };
    }
    if !acks_syn(state, ack) {
        return SynAckDecision::InvalidAck;
    }
    if state.stage != Stage::SynReceived as u8 {
        return SynAckDecision::Accept;
    }
    if seq != state.server_isn {
        SynAckDecision::InvalidSeq
    } else {
        synack_again(state.synack_hook, hook)
    }
}

/// [`again`] for a SYN-ACK: the one seen at `first`, seen again at `hook`.
#[inline(always)]
fn synack_again(first: Hook, hook: Hook) -> SynAckDecision {
    if first == hook {
        SynAckDecision::Retransmit
    } else {
        SynAckDecision::Duplicate
    }
}

/// What an ACK from the initiator means for its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckDecision {
    /// seq = the ack the SYN-ACK carried, ack = y+1: the handshake is done.
    Complete,
    InvalidSeq,
    InvalidAck,
    /// Not a handshake segment for this flow (no SYN-ACK seen yet).
    Ignore,
}

#[inline(always)]
pub fn on_ack(state: &FlowState, seq: u32, ack: u32) -> AckDecision {
    if state.stage != Stage::SynReceived as u8 {
        return AckDecision::Ignore;
    }
    // RFC 9293's acceptable ACK in SYN-RECEIVED: y+1, or past data the
    // SYN-ACK carried, up to y+1+len.
    if ack.wrapping_sub(state.server_isn.wrapping_add(1)) > u32::from(state.synack_payload) {
        AckDecision::InvalidAck
    } else if seq != state.synack_ack {
        AckDecision::InvalidSeq
    } else {
        AckDecision::Complete
    }
}

/// What a RST means for its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RstDecision {
    /// The responder refused the SYN.
    Rejected,
    /// Either side reset the handshake after the SYN.
    Aborted,
    /// Sequence numbers that the peer's TCP would not accept.
    Invalid,
    /// For an attempt already counted as a timeout.
    Late,
    /// After the handshake ended: the reply to a retried SYN, or a reset of
    /// the connection the handshake opened. Not a handshake event.
    AfterEnd,
}

/// A RST is judged the way the receiving TCP would (RFC 9293 3.10.7): in
/// SYN-SENT only a RST whose ACK acknowledges the SYN is acceptable; later,
/// its sequence number must be the next one expected from its sender.
#[inline(always)]
pub fn on_rst(
    state: &FlowState,
    from_initiator: bool,
    seq: u32,
    ack: u32,
    flags: u8,
) -> RstDecision {
    if state.stage == Stage::Expired as u8 {
        return RstDecision::Late;
    }
    if state.stage == Stage::Ended as u8 || state.stage == Stage::SynAckFirst as u8 {
        // (A SYN-ACK waiting for its SYN: no handshake this side has seen
        // start yet.)
        return RstDecision::AfterEnd;
    }
    let syn_received = state.stage == Stage::SynReceived as u8;
    if from_initiator {
        // The client's next sequence number is x+1 (after Fast Open data,
        // the SYN-ACK's ack).
        if syn_received {
            // The server's request socket resets on any RST in the window
            // its SYN-ACK advertised, from the client's next sequence on.
            let into = seq.wrapping_sub(state.synack_ack);
            return if into <= u32::from(state.synack_window) {
                RstDecision::Aborted
            } else {
                RstDecision::Invalid
            };
        }
        let expected = state.client_isn.wrapping_add(1);
        return if seq == expected || acks_syn(state, seq) {
            RstDecision::Aborted
        } else {
            RstDecision::Invalid
        };
    }
    if syn_received {
        // The server's next sequence number is y+1; a RST at y is also
        // accepted by Linux for a SYN-ACK never acknowledged.
        let y = state.server_isn;
        return if seq == y.wrapping_add(1) || seq == y {
            RstDecision::Aborted
        } else {
            RstDecision::Invalid
        };
    }
    if flags & TCP_ACK != 0 && acks_syn(state, ack) {
        RstDecision::Rejected
    } else {
        RstDecision::Invalid
    }
}

/// Katran-style bound on flow-table inserts: at most `budget` new entries per
/// CPU per `window_ns`. Beyond it SYNs are still counted, but not tracked, so
/// a random-source flood cannot evict the entries of real clients faster than
/// the budget allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FloodGuard {
    pub window_start_ns: u64,
    pub inserts: u64,
}

impl FloodGuard {
    /// Whether one more insert is allowed at `now_ns`; records it if so.
    #[inline(always)]
    pub fn admit(&mut self, now_ns: u64, window_ns: u64, budget: u64) -> bool {
        if now_ns.wrapping_sub(self.window_start_ns) >= window_ns {
            self.window_start_ns = now_ns;
            self.inserts = 0;
        }
        if self.inserts >= budget {
            return false;
        }
        self.inserts += 1;
        true
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, two u64s, no padding.
unsafe impl aya::Pod for FloodGuard {}

/// The field of a segment that failed a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Seq,
    Ack,
}

impl Field {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Seq => "seq",
            Self::Ack => "ack",
        }
    }
}

/// Why a segment of a tracked handshake was counted invalid, in numbers:
/// the field that failed, the first value it could have held, and the value
/// it held. The kernel's diagnostic events say this; `replay --explain`
/// says it with whole ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub field: Field,
    pub expected: u32,
    pub got: u32,
}

/// The [`Mismatch`] behind an `invalid` counter, from the flow's state
/// before the segment; None for any other counter.
#[must_use]
pub const fn mismatch(counter: Counter, state: &FlowState, seq: u32, ack: u32) -> Option<Mismatch> {
    let (field, expected, got) = match counter {
        Counter::InvalidSynAckAck => (Field::Ack, state.client_isn.wrapping_add(1), ack),
        Counter::InvalidSynAckSeq => (Field::Seq, state.server_isn, seq),
        Counter::InvalidAckSeq => (Field::Seq, state.synack_ack, seq),
        Counter::InvalidAckAck => (Field::Ack, state.server_isn.wrapping_add(1), ack),
        Counter::InvalidRst => {
            if state.stage == Stage::SynReceived as u8 {
                (Field::Seq, state.synack_ack, seq)
            } else {
                (Field::Ack, state.client_isn.wrapping_add(1), ack)
            }
        }
        _ => return None,
    };
    Some(Mismatch {
        field,
        expected,
        got,
    })
}

#[cfg(test)]
mod tests;

//! Capture reorder: a SYN-ACK captured shortly before the SYN it answers
//! (a tap or mirror with two ports and two queues) is put back after it.
//!
//! Every SYN-ACK waits up to [`REORDER_WINDOW_NS`] of capture time before
//! it is run. If the SYN it acknowledges comes in that span, the SYN runs
//! first and the SYN-ACK right after. Any other segment of the same
//! connection, or the end of the span, releases it as it came, so a
//! connection's own segments keep their order. Across connections order
//! does not matter: each has its own entry, and the clock the programs read
//! never goes back (see `replay`). Held SYN-ACKs are bounded
//! ([`MAX_HELD`]): a flood of unsolicited ones is released oldest first.
use std::collections::{HashMap, VecDeque};

use handshake_common::{
    flow::FlowKey,
    handshake::{SegmentKind, classify},
    parse::TcpSegment,
};

use crate::pcap::Packet;

/// How long a SYN-ACK waits for the SYN it answers. A capture reorders by
/// the skew between two queues, far less than this; a SYN-ACK that really
/// came first with the right ack cannot be told from one reordered.
pub const REORDER_WINDOW_NS: u64 = 10_000_000;
/// Most SYN-ACKs held at once.
pub const MAX_HELD: usize = 4096;

/// A packet with its number in the capture (1-based), for `--explain`.
pub struct Numbered {
    pub number: u64,
    pub packet: Packet,
}

struct Held {
    frame: Numbered,
    /// The initiator's key: the SYN's.
    conn: FlowKey,
    /// The ack the SYN-ACK carried.
    ack: u32,
}

#[derive(Default)]
pub struct Reorder {
    held: VecDeque<Held>,
    /// SYN-ACKs held per connection, so that a segment of a connection with
    /// none held costs one lookup, not a walk of the queue.
    per_conn: HashMap<FlowKey, u32>,
    /// SYN-ACKs run after a SYN captured later.
    pub reordered: u64,
}

impl Reorder {
    /// Takes the next packet of the capture (`seg`: its TCP segment, if it
    /// is one) and appends to `ready` the packets to run now, in order.
    pub fn push(&mut self, frame: Numbered, seg: Option<&TcpSegment>, ready: &mut Vec<Numbered>) {
        self.due(frame.packet.ts_ns, ready);
        let Some(seg) = seg else {
            ready.push(frame);
            return;
        };
        let key = FlowKey::of_segment(seg);
        match classify(seg.flags) {
            SegmentKind::SynAck => {
                if self.held.len() >= MAX_HELD {
                    self.pop_front(ready);
                }
                let conn = key.reversed();
                *self.per_conn.entry(conn).or_default() += 1;
                self.held.push_back(Held {
                    frame,
                    conn,
                    ack: seg.ack,
                });
            }
            SegmentKind::Syn if self.per_conn.contains_key(&key) => {
                // Acknowledges this SYN: x+1, or up to x+1+len after data.
                let answered = self.held.iter().any(|h| {
                    h.conn == key
                        && h.ack.wrapping_sub(seg.seq.wrapping_add(1)) <= u32::from(seg.payload_len)
                });
                if answered {
                    self.reordered += 1;
                    ready.push(frame);
                    self.release(&key, ready);
                } else {
                    self.release(&key, ready);
                    ready.push(frame);
                }
            }
            _ => {
                for conn in [key, key.reversed()] {
                    if self.per_conn.contains_key(&conn) {
                        self.release(&conn, ready);
                    }
                }
                ready.push(frame);
            }
        }
    }

    /// Releases, in order, the SYN-ACKs whose wait has ended by capture
    /// time `now_ns`: before a scan at that time, so that the scan sees them.
    pub fn due(&mut self, now_ns: u64, ready: &mut Vec<Numbered>) {
        while self
            .held
            .front()
            .is_some_and(|h| h.frame.packet.ts_ns.saturating_add(REORDER_WINDOW_NS) < now_ns)
        {
            self.pop_front(ready);
        }
    }

    /// Releases everything held, in order (the end of the capture).
    pub fn finish(&mut self, ready: &mut Vec<Numbered>) {
        while !self.held.is_empty() {
            self.pop_front(ready);
        }
    }

    fn pop_front(&mut self, ready: &mut Vec<Numbered>) {
        if let Some(h) = self.held.pop_front() {
            self.forget(&h.conn);
            ready.push(h.frame);
        }
    }

    /// Releases the SYN-ACKs held for `conn`, in the order they came.
    fn release(&mut self, conn: &FlowKey, ready: &mut Vec<Numbered>) {
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].conn == *conn {
                if let Some(h) = self.held.remove(i) {
                    ready.push(h.frame);
                }
            } else {
                i += 1;
            }
        }
        self.per_conn.remove(conn);
    }

    fn forget(&mut self, conn: &FlowKey) {
        if let Some(n) = self.per_conn.get_mut(conn) {
            *n -= 1;
            if *n == 0 {
                self.per_conn.remove(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use handshake_common::{
        counters::Family,
        parse::{TCP_ACK, TCP_SYN},
    };

    use super::*;
    use crate::pcap::LinkType;

    const MS: u64 = 1_000_000;

    fn seg(from_client: bool, flags: u8, seq: u32, ack: u32) -> TcpSegment {
        let (a, b, pa, pb) = if from_client {
            ([1, 0, 0, 0], [2, 0, 0, 0], 40000, 80)
        } else {
            ([2, 0, 0, 0], [1, 0, 0, 0], 80, 40000)
        };
        TcpSegment {
            family: Family::Ipv4,
            flags,
            src_port: pa,
            dst_port: pb,
            payload_len: 0,
            seq,
            ack,
            src_addr: a,
            dst_addr: b,
            window: 0,
            _pad: 0,
        }
    }

    fn frame(number: u64, ts_ns: u64) -> Numbered {
        Numbered {
            number,
            packet: Packet {
                ts_ns,
                frame: Vec::new(),
                way: None,
                link: LinkType::Ethernet,
            },
        }
    }

    /// Feeds (time, segment) in capture order; returns the run order.
    fn run(input: &[(u64, TcpSegment)]) -> (Vec<u64>, u64) {
        let mut r = Reorder::default();
        let mut ready = Vec::new();
        for (i, (t, s)) in input.iter().enumerate() {
            r.push(frame(i as u64 + 1, *t), Some(s), &mut ready);
        }
        r.finish(&mut ready);
        (ready.iter().map(|f| f.number).collect(), r.reordered)
    }

    #[test]
    fn a_synack_before_its_syn_runs_after_it() {
        let synack = seg(false, TCP_SYN | TCP_ACK, 500, 101);
        let syn = seg(true, TCP_SYN, 100, 0);
        let ack = seg(true, TCP_ACK, 101, 501);
        assert_eq!(
            run(&[(0, synack), (MS / 2, syn), (MS, ack)]),
            (vec![2, 1, 3], 1)
        );
    }

    #[test]
    fn in_order_handshakes_keep_their_order() {
        let syn = seg(true, TCP_SYN, 100, 0);
        let synack = seg(false, TCP_SYN | TCP_ACK, 500, 101);
        let ack = seg(true, TCP_ACK, 101, 501);
        // The final ACK releases the SYN-ACK before it runs.
        assert_eq!(
            run(&[(0, syn), (MS, synack), (MS + 1, ack)]),
            (vec![1, 2, 3], 0)
        );
        // Nothing after it: released by time, or at the end.
        assert_eq!(run(&[(0, syn), (MS, synack)]), (vec![1, 2], 0));
    }

    #[test]
    fn a_syn_it_does_not_answer_or_one_too_late_is_not_matched() {
        let synack = seg(false, TCP_SYN | TCP_ACK, 500, 101);
        let other_isn = seg(true, TCP_SYN, 7, 0);
        assert_eq!(run(&[(0, synack), (1, other_isn)]), (vec![1, 2], 0));
        let syn = seg(true, TCP_SYN, 100, 0);
        assert_eq!(
            run(&[(0, synack), (REORDER_WINDOW_NS + 1, syn)]),
            (vec![1, 2], 0),
            "released by the window's end first"
        );
    }

    #[test]
    fn held_synacks_are_bounded() {
        let mut r = Reorder::default();
        let mut ready = Vec::new();
        for i in 0..MAX_HELD as u32 + 10 {
            let mut s = seg(false, TCP_SYN | TCP_ACK, 500, 101);
            s.src_addr = [i + 10, 0, 0, 0];
            r.push(frame(u64::from(i) + 1, 0), Some(&s), &mut ready);
        }
        assert_eq!(ready.len(), 10);
        assert_eq!(ready[0].number, 1, "oldest first");
        assert_eq!(r.held.len(), MAX_HELD);
    }
}

#!/usr/bin/env python3
"""An independent reading of a capture's TCP handshakes, to judge `replay` by.

Nothing here comes from the monitor's code. The packets are dissected by
tshark (Wireshark's dissectors, not our parser); the handshakes are followed
by the state machine below, written from RFC 9293 and from the definitions
in README.md and docs/replay.md (what counts as an attempt, a retransmit, a
rejection; how long ended and timed-out handshakes are remembered; the
capture clock, the one-second scans, the 10 ms reorder of a SYN-ACK
captured before its SYN).

    judge.py CAPTURE [--timeout SECONDS]   prints one JSON object: the funnel

Exit status 2 when tshark reads no frame of it (its message on stderr); a
capture cut short is judged up to the damage, as replay reads it.
"""
import json
import re
import subprocess
import sys
from collections import OrderedDict

FIELDS = [
    "frame.number",
    "frame.time_epoch",
    "frame.protocols",
    "sll.pkttype",
    "frame.packet_flags_direction",
    "ip.src",
    "ip.dst",
    "ip.hdr_len",
    "ip.len",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.fraghdr.offset",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.len",
    "tcp.window_size_value",
    "tcp.hdr_len",
]

# TCP straight over IP over a link layer replay reads: Ethernet with up to
# two VLAN tags, Linux cooked (SLL, SLL2), raw IP, BSD loopback, NFLOG,
# Cisco HDLC, PPP, IP over InfiniBand. Anything tunnelled, or TCP quoted
# inside ICMP, is not the host's handshake.
LINK = r"(?:eth:ethertype:|sll:ethertype:|raw:|null:|loop:|nflog:|chdlc:|ppp:(?:chdlc:)?|ipoib:)?"
VLANS = r"(?:vlan:ethertype:){0,2}"
IPV6_EXT = r"(?:ipv6\.(?:hopopts|routing|dstopts|fraghdr):){0,5}"
STACK = re.compile(rf"^{LINK}{VLANS}(?:ip|ipv6:{IPV6_EXT})(?::)?tcp(?::|$)")

NS = 1_000_000_000
SCAN_EVERY = NS
ENDED_LINGER = 5 * NS
TOMBSTONE_LINGER = 130 * NS
REORDER_WINDOW = 10_000_000
MAX_HELD = 4096
MAX_SCANS_PER_GAP = 1000

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
M32 = 0xFFFFFFFF


def to_ns(epoch):
    whole, _, frac = epoch.partition(".")
    return int(whole) * NS + int((frac + "000000000")[:9])


class Seg:
    __slots__ = ("number", "ts", "out", "src", "dst", "sport", "dport", "flags",
                 "seq", "ack", "length", "window")

    def key(self):
        return (self.src, self.dst, self.sport, self.dport)


def reversed_key(k):
    return (k[1], k[0], k[3], k[2])


def packets(path, errors):
    """Yields (frame number, time in ns, Seg or None, whether it is a SYN on
    any link) in capture order."""
    cmd = ["tshark", "-n", "-r", path, "-T", "fields", "-E", "separator=\t",
           "-E", "occurrence=f",
           "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-o", "tcp.desegment_tcp_streams:FALSE", "-o", "tcp.analyze_sequence_numbers:FALSE",
           "-o", "tcp.try_heuristic_first:FALSE"]
    for f in FIELDS:
        cmd += ["-e", f]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        v = line.rstrip("\n").split("\t")
        if len(v) < len(FIELDS):
            continue
        (number, epoch, protocols, pkttype, epb_dir, ip_src, ip_dst, ip_hl, ip_len,
         frag, ip6_src, ip6_dst, frag6, sport, dport, flags, seq, ack, tlen, win,
         thl) = v[:21]
        if not tlen and ip_len and ip_hl and thl and not ip6_src:
            # tshark leaves tcp.len out when it stops early in the segment
            # (a malformed option, say); it is the IP payload past the header.
            tlen = str(int(ip_len) - int(ip_hl) - int(thl))
        ts = to_ns(epoch) if epoch else 0
        seg = None
        # A SYN on any link, even one replay does not read (what a refused
        # capture would have held).
        any_syn = bool(flags) and int(flags, 16) & (SYN | RST) == SYN \
            and protocols.count(":tcp") == 1 and "icmp" not in protocols
        if STACK.match(protocols) and flags and seq and sport and tlen:
            ok = True
            if ip_src:
                # A later fragment carries no TCP header; a first one does.
                ok = not frag or int(frag) == 0
                ok = ok and ip_len and ip_hl and int(ip_len) >= int(ip_hl)
                src, dst = ip_src, ip_dst
            else:
                ok = not frag6 or int(frag6) == 0
                src, dst = ip6_src, ip6_dst
            if ok and int(tlen) >= 0:
                seg = Seg()
                seg.number = int(number)
                seg.ts = ts
                # Outgoing: SLL's packet type 4, or pcapng's epb_flags.
                seg.out = (pkttype and int(pkttype, 0) == 4) or (epb_dir and int(epb_dir, 0) & 3 == 2)
                seg.src, seg.dst = src, dst
                seg.sport, seg.dport = int(sport), int(dport)
                seg.flags = int(flags, 16) & 0xFF
                seg.seq = int(seq)
                seg.ack = int(ack) if ack else 0
                seg.length = int(tlen)
                seg.window = int(win) if win else 0
        yield int(number), ts, seg, any_syn
    proc.wait()
    err = proc.stderr.read().strip()
    if proc.returncode != 0:
        # A capture cut short is read up to the damage, as replay reads it.
        errors.append(err.splitlines()[-1] if err else f"tshark exited {proc.returncode}")


class Flow:
    """One attempt, keyed on its initiator's 4-tuple."""
    __slots__ = ("stage", "syn_ns", "isn", "syn_len", "syn_out", "y", "synack_ack",
                 "synack_len", "synack_window", "synack_ns", "synack_out", "end_ns",
                 "ended_from")

    def __init__(self, seg, now):
        self.stage = "syn_sent"
        self.syn_ns = now
        self.isn = seg.seq
        self.syn_len = seg.length
        self.syn_out = seg.out
        self.y = None
        self.synack_ack = None
        self.synack_len = 0
        self.synack_window = 0
        self.synack_ns = 0
        self.synack_out = None
        self.end_ns = 0
        self.ended_from = None

    def acks_syn(self, ack):
        nxt = (self.isn + 1) & M32
        return ack == nxt or (self.syn_len and ack == (nxt + self.syn_len) & M32)

    def recently_ended(self, now):
        return self.stage == "ended" and now - self.end_ns < ENDED_LINGER


class Judge:
    def __init__(self, timeout_ns):
        self.timeout = timeout_ns
        self.flows = {}
        self.clock = 0
        self.n = OrderedDict((k, 0) for k in (
            "attempts", "synack", "completed", "rejected", "aborted",
            "retransmits_syn", "retransmits_synack", "duplicate_observations",
            "timeouts", "unsolicited_synack", "late_segments", "superseded",
            "invalid"))

    # The programs' clock: capture time, never going back.
    def run(self, seg):
        self.clock = max(self.clock, seg.ts)
        now = self.clock
        f = seg.flags
        if f & RST:
            self.rst(seg)
        elif f & SYN:
            self.synack(seg, now) if f & ACK else self.syn(seg, now)
        elif f & ACK:
            self.final_ack(seg, now)

    def end(self, flow, at):
        flow.ended_from = flow.stage
        flow.stage = "ended"
        flow.end_ns = at

    def syn(self, seg, now):
        k = seg.key()
        flow = self.flows.get(k)
        if flow is not None:
            if flow.stage == "ended":
                if flow.recently_ended(now) and flow.isn == seg.seq:
                    self.again("syn", flow.syn_out, seg.out)
                    return
            elif flow.stage == "expired":
                if flow.isn == seg.seq:
                    self.n["late_segments"] += 1
                    return
            elif flow.isn == seg.seq:
                self.again("syn", flow.syn_out, seg.out)
                return
            else:
                self.n["superseded"] += 1
        self.n["attempts"] += 1
        self.flows[k] = Flow(seg, now)

    def again(self, what, first_out, out):
        if first_out == out:
            self.n["retransmits_" + what] += 1
        else:
            self.n["duplicate_observations"] += 1

    def synack(self, seg, now):
        flow = self.flows.get(reversed_key(seg.key()))
        if flow is None:
            self.n["unsolicited_synack"] += 1
            return
        if flow.stage == "expired":
            self.n["late_segments"] += 1
            return
        if flow.stage == "ended":
            if (flow.recently_ended(now) and flow.ended_from == "syn_received"
                    and seg.seq == flow.y and flow.acks_syn(seg.ack)):
                self.again("synack", flow.synack_out, seg.out)
            else:
                self.n["unsolicited_synack"] += 1
            return
        if not flow.acks_syn(seg.ack):
            self.n["invalid"] += 1
        elif flow.stage == "syn_sent":
            self.n["synack"] += 1
            flow.stage = "syn_received"
            flow.y = seg.seq
            flow.synack_ack = seg.ack
            flow.synack_len = seg.length
            flow.synack_window = seg.window
            flow.synack_ns = now
            flow.synack_out = seg.out
        elif seg.seq != flow.y:
            self.n["invalid"] += 1
        else:
            self.again("synack", flow.synack_out, seg.out)

    def final_ack(self, seg, now):
        flow = self.flows.get(seg.key())
        if flow is None or flow.stage != "syn_received":
            return
        # RFC 9293: in SYN-RECEIVED an ACK is acceptable if it acknowledges
        # the SYN-ACK (and any data it carried), and its sequence number is
        # the one the SYN-ACK acknowledged.
        if (seg.ack - (flow.y + 1)) & M32 > flow.synack_len or seg.seq != flow.synack_ack:
            self.n["invalid"] += 1
            return
        self.n["completed"] += 1
        self.end(flow, now)

    def rst(self, seg):
        k = seg.key()
        flow = self.flows.get(reversed_key(k))
        from_initiator = flow is None
        if from_initiator:
            flow = self.flows.get(k)
            if flow is None:
                return
        if flow.stage == "expired":
            self.n["late_segments"] += 1
            return
        if flow.stage == "ended":
            return
        received = flow.stage == "syn_received"
        if from_initiator:
            if received:
                ok = (seg.seq - flow.synack_ack) & M32 <= flow.synack_window
            else:
                ok = seg.seq == (flow.isn + 1) & M32 or flow.acks_syn(seg.seq)
            what = "aborted"
        elif received:
            ok = seg.seq in (flow.y, (flow.y + 1) & M32)
            what = "aborted"
        else:
            ok = bool(seg.flags & ACK) and flow.acks_syn(seg.ack)
            what = "rejected"
        if not ok:
            self.n["invalid"] += 1
            return
        self.n[what] += 1
        # An ended handshake is remembered from the last handshake segment it read.
        self.end(flow, max(flow.syn_ns, flow.synack_ns))

    def scan(self, now):
        for k in list(self.flows):
            flow = self.flows[k]
            if flow.stage in ("syn_sent", "syn_received"):
                if now - flow.syn_ns >= self.timeout:
                    self.n["timeouts"] += 1
                    flow.stage = "expired"
            elif flow.stage == "expired":
                if now - flow.syn_ns >= self.timeout + TOMBSTONE_LINGER:
                    del self.flows[k]
            elif not flow.recently_ended(now):
                del self.flows[k]

    def finish(self):
        for flow in self.flows.values():
            if flow.stage in ("syn_sent", "syn_received"):
                self.n["timeouts"] += 1


class Reorder:
    """A SYN-ACK waits up to 10 ms of capture time for the SYN it answers."""

    def __init__(self):
        self.held = []  # (seg, initiator key)
        self.reordered = 0

    def due(self, now, out):
        while self.held and self.held[0][0].ts + REORDER_WINDOW < now:
            out.append(self.held.pop(0)[0])

    def release(self, conn, out):
        keep = []
        for seg, c in self.held:
            (out.append(seg) if c == conn else keep.append((seg, c)))
        self.held = keep

    def push(self, seg, out):
        self.due(seg.ts, out)
        k = seg.key()
        f = seg.flags
        if not f & RST and f & SYN and f & ACK:
            if len(self.held) >= MAX_HELD:
                out.append(self.held.pop(0)[0])
            self.held.append((seg, reversed_key(k)))
            return
        if not f & RST and f & SYN:
            answered = any(c == k and (h.ack - (seg.seq + 1)) & M32 <= seg.length
                           for h, c in self.held)
            if answered:
                self.reordered += 1
                out.append(seg)
                self.release(k, out)
            else:
                self.release(k, out)
                out.append(seg)
            return
        self.release(k, out)
        self.release(reversed_key(k), out)
        out.append(seg)


def judge(path, timeout_ns=30 * NS, errors=None):
    """The funnel of the capture at `path`; None if tshark read no frame of
    it (why: in `errors`)."""
    errors = [] if errors is None else errors
    j = Judge(timeout_ns)
    r = Reorder()
    first = None
    next_scan = 0
    ready = []
    frames = 0
    last = 0
    syns_any_link = 0
    for number, ts, seg, any_syn in packets(path, errors):
        syns_any_link += any_syn
        frames += 1
        if first is None:
            first = ts
            j.scan(ts)
            next_scan = ts + SCAN_EVERY
        last = max(last, ts)
        r.due(ts, ready)
        for s in ready:
            j.run(s)
        ready.clear()
        if ts >= next_scan:
            behind = (ts - next_scan) // SCAN_EVERY
            if behind > MAX_SCANS_PER_GAP:
                next_scan += (behind - MAX_SCANS_PER_GAP) * SCAN_EVERY
            while next_scan <= ts:
                j.scan(next_scan)
                next_scan += SCAN_EVERY
        if seg is None:
            continue
        r.push(seg, ready)
        for s in ready:
            j.run(s)
        ready.clear()
    r.held, rest = [], [s for s, _ in r.held]
    for s in rest:
        j.run(s)
    if frames:
        j.scan(last)
    j.finish()
    if not frames and errors:
        return None
    out = dict(j.n)
    out["frames"] = frames
    out["tshark_error"] = errors[0] if errors else None
    out["syns_any_link"] = syns_any_link
    out["reordered_synacks"] = r.reordered
    return out


def main():
    args = sys.argv[1:]
    timeout = 30
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        print("usage: judge.py CAPTURE [--timeout SECONDS]", file=sys.stderr)
        sys.exit(2)
    errors = []
    out = judge(args[0], int(timeout * NS), errors)
    if out is None:
        print(f"judge.py: tshark cannot read {args[0]}: {errors[0]}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

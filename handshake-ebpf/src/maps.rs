//! The maps both programs share, and the small operations on them.
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray},
};
use handshake_common::{
    DEFAULT_FLOW_TABLE_SIZE,
    counters::{
        COUNTERS_LEN, Counter, Direction, Family, MAX_IFINDEX, OTHER_IFACE_SLOT, counter_index,
    },
    flow::{FlowKey, FlowState, Stage},
    handshake::FloodGuard,
    histogram::{LATENCY_LEN, Leg, base_index, bucket_for_ns, sum_index},
    listener::{ListenerCounters, MAX_LISTENERS, PORTS},
    parse::TcpSegment,
    pending::{PENDING_SLOTS, pending_slot, pending_slot_of},
    table::{self, BUSY, Bucket, EMPTY, Entry, WAYS},
};

/// Handshakes in progress: the set-associative table of
/// `handshake_common::table`. The agent sizes it at load time (and sets
/// `FLOW_BUCKET_MASK` to match), and scans it in place: mmapable.
#[map]
pub static FLOWS: Array<Bucket> =
    Array::with_max_entries(table::buckets_for(DEFAULT_FLOW_TABLE_SIZE), BPF_F_MMAPABLE);

/// The flow table's hash seed, written by the agent when it creates the
/// table. A map, not a load-time constant, so that it is pinned with the
/// table it belongs to.
#[map]
pub static FLOW_SEED: Array<u64> = Array::with_max_entries(1, 0);

/// Exact counters, per CPU: no atomics on the hot path.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Log2 latency histograms (see `handshake_common::histogram`).
#[map]
pub static LATENCY: PerCpuArray<u64> = PerCpuArray::with_max_entries(LATENCY_LEN, 0);

/// Per-CPU insert budget state.
#[map]
pub static FLOOD_GUARD: PerCpuArray<FloodGuard> = PerCpuArray::with_max_entries(1, 0);

/// Handshakes in syn_received per 5-tuple hash slot: see
/// `handshake_common::pending`. Shared by all CPUs, updated atomically.
#[map]
pub static PENDING: Array<u64> = Array::with_max_entries(PENDING_SLOTS, 0);

/// Local server port -> listener slot; the agent fills it (see
/// `handshake_common::listener`).
#[map]
pub static LISTENER_SLOTS: Array<u32> = Array::with_max_entries(PORTS, 0);

/// Per-listener funnels by slot, per CPU; slot 0 is every other port.
#[map]
pub static LISTENERS: PerCpuArray<ListenerCounters> =
    PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

/// ifindex -> interface slot of the `COUNTERS` array; the agent fills it.
/// An array, not a hash: the lookup is an inlined bounds check and load.
#[map]
pub static IFACES: Array<u32> = Array::with_max_entries(MAX_IFINDEX, 0);

/// The time, written by the replay tool before each packet when
/// `CLOCK_FROM_MAP` is set.
#[map]
pub static REPLAY_CLOCK: Array<u64> = Array::with_max_entries(1, 0);

/// Byte offset in the frame of the word the benchmark programs step (see
/// `bench_stepped_ingress`). Only they use it.
#[cfg(feature = "bench")]
#[map]
pub static BENCH_STEP: Array<u32> = Array::with_max_entries(1, 0);

/// Buckets of `FLOWS` minus one; set by the agent at load time.
#[unsafe(no_mangle)]
static FLOW_BUCKET_MASK: u32 = table::buckets_for(DEFAULT_FLOW_TABLE_SIZE) - 1;

/// Set at load time for offline replay: read the time from `REPLAY_CLOCK`.
/// In .rodata, frozen: the verifier prunes the branch it does not take.
#[unsafe(no_mangle)]
static CLOCK_FROM_MAP: u8 = 0;

/// New flow-table entries allowed per CPU per window; set by the agent
/// (`--syn-insert-budget`). u64::MAX: no budget.
#[unsafe(no_mangle)]
static SYN_INSERT_BUDGET: u64 = u64::MAX;
/// Length of the insert-budget window in ns; set by the agent.
#[unsafe(no_mangle)]
static SYN_INSERT_WINDOW_NS: u64 = 100_000_000;

/// Set at load time in tap mode: a SYN-ACK seen before any SYN waits for it
/// (`Stage::SynAckFirst`). Frozen: with it clear, the verifier removes the
/// path.
#[unsafe(no_mangle)]
static TAP_REORDER: u8 = 0;

/// Whether a SYN-ACK seen before its SYN may wait for it (tap mode).
#[inline(always)]
pub fn tap_reorder() -> bool {
    // SAFETY: a read of a constant the loader may have rewritten.
    unsafe { core::ptr::read_volatile(&TAP_REORDER) != 0 }
}

/// The time now: the kernel's monotonic clock live, the capture's in replay.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a read of a constant the loader may have rewritten.
    if unsafe { core::ptr::read_volatile(&CLOCK_FROM_MAP) } != 0 {
        return REPLAY_CLOCK.get(0).copied().unwrap_or(0);
    }
    // SAFETY: a helper with no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The `COUNTERS` slot of an interface.
#[inline(always)]
pub fn iface_slot(ifindex: u32) -> u32 {
    IFACES.get(ifindex).copied().unwrap_or(OTHER_IFACE_SLOT)
}

#[inline(always)]
pub fn count(iface_slot: u32, family: Family, direction: Direction, counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter_index(iface_slot, family, direction, counter))
    {
        // SAFETY: a per-CPU slot; programs do not migrate CPUs mid-run.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn add(index: u32, value: u64) {
    if let Some(slot) = LATENCY.get_ptr_mut(index) {
        // SAFETY: as in `count`.
        unsafe { *slot += value };
    }
}

#[inline(always)]
pub fn record_latency(direction: Direction, leg: Leg, ns: u64) {
    add(base_index(direction, leg) + bucket_for_ns(ns), 1);
    add(sum_index(direction, leg), ns);
}

/// A flow's two buckets in `FLOWS`, and the tag its way carries.
#[derive(Clone, Copy)]
pub struct Place {
    buckets: [*mut Bucket; 2],
    tag: u64,
}

/// One flow's way in `FLOWS`, found or claimed: its tag and its state.
#[derive(Clone, Copy)]
pub struct Found {
    tag_at: *mut u64,
    state: *mut FlowState,
    tag: u64,
}

impl Found {
    /// Way `i` of `bucket`, which holds (or will hold) a flow tagged `tag`.
    #[inline(always)]
    fn way(bucket: *mut Bucket, i: usize, tag: u64) -> Self {
        let i = i & (WAYS - 1);
        // SAFETY: `bucket` points to a live map value; `i` is in range.
        unsafe {
            Self {
                tag_at: &raw mut (*bucket).tags[i],
                state: &raw mut (*bucket).entries[i].state,
                tag,
            }
        }
    }

    /// The flow's state, in the map.
    #[inline(always)]
    pub fn state(&self) -> *mut FlowState {
        self.state
    }
}

/// Compare-and-swap of a way's tag; true if it held `from`. BPF's
/// compare-and-swap is fully ordered: the writes before it are visible to
/// whoever sees its result.
#[inline(always)]
fn swap_tag(tag_at: *mut u64, from: u64, to: u64) -> bool {
    // SAFETY: `tag_at` points into a live map value; every CPU changes tags
    // with this same atomic.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            tag_at, from, to,
        )
        .1
    }
}

/// The benchmarks' model of a narrower table, for B4's comparison: one
/// bucket per key and `BENCH_TABLE_WAYS` ways of each used. Set at load
/// time; absent from the agent's object.
#[cfg(feature = "bench")]
#[unsafe(no_mangle)]
static BENCH_TABLE_CHOICES: u32 = 2;
#[cfg(feature = "bench")]
#[unsafe(no_mangle)]
static BENCH_TABLE_WAYS: u32 = WAYS as u32;

/// Ways of each bucket used: all but in the benchmarks' model.
#[inline(always)]
fn usable_ways() -> usize {
    #[cfg(feature = "bench")]
    // SAFETY: a read of a constant the loader may have rewritten.
    return unsafe { core::ptr::read_volatile(&BENCH_TABLE_WAYS) } as usize;
    #[cfg(not(feature = "bench"))]
    WAYS
}

/// Whether a flow may sit in its second bucket: always but in the
/// benchmarks' model.
#[inline(always)]
fn two_choices() -> bool {
    #[cfg(feature = "bench")]
    // SAFETY: as in `usable_ways`.
    return unsafe { core::ptr::read_volatile(&BENCH_TABLE_CHOICES) } == 2;
    #[cfg(not(feature = "bench"))]
    true
}

/// Where `key` lives in the flow table (its buckets, whether or not it is
/// there). One hash per segment, shared by the lookup and the insert.
#[inline(always)]
pub fn place_of(key: &FlowKey) -> Option<Place> {
    let seed = FLOW_SEED.get(0).copied().unwrap_or(0);
    // SAFETY: a read of a constant the loader may have rewritten.
    let mask = unsafe { core::ptr::read_volatile(&FLOW_BUCKET_MASK) };
    let place = table::place(table::flow_hash(key, seed), mask);
    let first = FLOWS.get_ptr_mut(place.buckets[0])?;
    let second = if two_choices() {
        FLOWS.get_ptr_mut(place.buckets[1])?
    } else {
        first
    };
    Some(Place {
        buckets: [first, second],
        tag: place.tag,
    })
}

/// Always zero: written by nobody, and unknown to the verifier, which
/// tracks only what the programs compute (a `.bss` value is not frozen).
static mut ZERO: u64 = 0;

/// `x`, as a value the verifier cannot know: see `table::way_for_new_flow`.
/// An index that went through it is masked where it indexes, so that it
/// stays in bounds whatever the verifier assumes.
#[inline(always)]
fn opaque(x: u64) -> u64 {
    // SAFETY: a read of a static nobody writes.
    x ^ unsafe { core::ptr::read_volatile(&raw const ZERO) }
}

impl Place {
    /// The way holding `key`, if it is tracked: its first bucket, then its
    /// second.
    #[inline(always)]
    pub fn find(&self, key: &FlowKey) -> Option<Found> {
        Self::find_in(self.buckets[0], key, self.tag)
            .or_else(|| Self::find_in(self.buckets[1], key, self.tag))
    }

    #[inline(always)]
    fn find_in(bucket: *mut Bucket, key: &FlowKey, tag: u64) -> Option<Found> {
        // SAFETY: a live map value; plain reads, see `table` on races.
        let b = unsafe { &*bucket };
        let i = table::find_with(b, key, tag, opaque)? & (WAYS - 1);
        if i >= usable_ways() {
            return None;
        }
        // The tag as found: the flow's, or its tombstone's.
        Some(Found::way(bucket, i, b.tags[i]))
    }
}

/// The flow `key`'s way, if it is tracked.
#[inline(always)]
pub fn find_flow(key: &FlowKey) -> Option<Found> {
    place_of(key)?.find(key)
}

/// Inserts the entry for a new attempt, within the per-CPU insert budget.
/// `existing` is the flow's way when the SYN replaces a tracked attempt
/// (port reuse): rewritten in place, it evicts nothing, so it is not charged.
#[inline(always)]
pub fn insert_new_flow(
    place: &Place,
    key: &FlowKey,
    state: &FlowState,
    family: Family,
    direction: Direction,
    existing: Option<Found>,
) {
    let iface = u32::from(state.iface_slot);
    count(iface, family, direction, Counter::Attempts);
    if let Some(found) = existing {
        // SAFETY: the flow's own way; its key stays.
        unsafe { *found.state() = *state };
        if table::is_tombstone_tag(found.tag) {
            // A tombstone becomes a handshake in progress again.
            swap_tag(found.tag_at, found.tag, found.tag | 1);
        }
        return;
    }
    // SAFETY: reads of constants the loader may have rewritten.
    let budget = unsafe { core::ptr::read_volatile(&SYN_INSERT_BUDGET) };
    // u64::MAX (the default) is no budget: a frozen constant, so the
    // verifier drops the whole block.
    if budget != u64::MAX {
        // SAFETY: as above.
        let window = unsafe { core::ptr::read_volatile(&SYN_INSERT_WINDOW_NS) };
        let admitted = match FLOOD_GUARD.get_ptr_mut(0) {
            // SAFETY: per-CPU slot.
            Some(guard) => unsafe { (*guard).admit(state.syn_ns, window, budget) },
            None => false,
        };
        if !admitted {
            count(iface, family, direction, Counter::SynUntracked);
            return;
        }
    }
    if !insert_flow(place, key, state) {
        count(iface, family, direction, Counter::SynInsertFailed);
    }
}

/// Puts a new flow in one of its buckets: a free way, or else the one
/// `table::way_for_new_flow` picks, whose flow is evicted. False only when
/// other CPUs were writing the ways at that instant.
#[inline(always)]
pub fn insert_flow(place: &Place, key: &FlowKey, state: &FlowState) -> bool {
    // SAFETY: live map values; see `table` on races.
    let buckets = unsafe { [&*place.buckets[0], &*place.buckets[1]] };
    let Some((b, i)) = table::way_for_new_flow(buckets, usable_ways(), opaque) else {
        return false;
    };
    // Chosen by a branch, not an index: the verifier knows a pointer
    // loaded from a variable place on the stack only as a number.
    let bucket = if b == 0 {
        place.buckets[0]
    } else {
        place.buckets[1]
    };
    // SAFETY: as above.
    let bucket = unsafe { &mut *bucket };
    let i = i & (WAYS - 1);
    let seen = bucket.tags[i];
    // Claim the way; if another CPU changed it since we ranked it, give up.
    if seen == BUSY || !swap_tag(&raw mut bucket.tags[i], seen, BUSY) {
        return false;
    }
    // The way is ours until we publish it. A tombstone goes uncounted (it
    // was counted when it ended), its state unread.
    if table::is_live(seen) {
        evicted(&bucket.entries[i].key, &bucket.entries[i].state);
    }
    bucket.entries[i] = Entry {
        key: *key,
        state: *state,
    };
    swap_tag(&raw mut bucket.tags[i], BUSY, place.tag)
}

/// Accounts for a live flow a new one pushed out of its way.
#[inline(always)]
fn evicted(key: &FlowKey, state: &FlowState) {
    let counter = if state.stage == Stage::SynReceived as u8 {
        pending_leave(key);
        Counter::EvictedSynReceived
    } else if state.stage == Stage::SynSent as u8 {
        Counter::EvictedSynSent
    } else if state.stage == Stage::SynAckFirst as u8 {
        // A SYN-ACK whose SYN never came (tap mode): now counted.
        Counter::Unsolicited
    } else {
        // A tombstone: already counted (a timeout, or how it ended).
        return;
    };
    count(
        u32::from(state.iface_slot),
        Family::from_u8(key.family),
        Direction::from_u8(state.direction),
        counter,
    );
}

/// Ends a handshake: its way becomes a [`Stage::Ended`] tombstone, stamped
/// `now_ns`. True if this call ended it: the tag is swapped to the
/// tombstone's ([`entomb`]) before the state changes, so of two programs
/// ending the same handshake at once, one does, and counts it.
#[inline(always)]
pub fn end_flow(found: &Found, now_ns: u64) -> bool {
    if !entomb(found) {
        return false;
    }
    // SAFETY: a live map value; the compare-and-swap made this program the
    // one that ends the handshake, and its key stays.
    let state = unsafe { &mut *found.state() };
    state.ended_from = state.stage;
    state.stage = Stage::Ended as u8;
    state.synack_ns = now_ns;
    true
}

/// Marks a flow's way a tombstone (for a handshake that ended or timed
/// out); true if this call did.
#[inline(always)]
pub fn entomb(found: &Found) -> bool {
    !table::is_tombstone_tag(found.tag)
        && swap_tag(found.tag_at, found.tag, table::tombstone_tag(found.tag))
}

/// Frees a flow's way; true if this call freed it (of two programs ending
/// the same handshake at once, one does).
#[inline(always)]
pub fn remove_flow(found: &Found) -> bool {
    swap_tag(found.tag_at, found.tag, EMPTY)
}

#[inline(always)]
fn pending_add(key: &FlowKey, delta: u64) {
    if let Some(slot) = PENDING.get_ptr_mut(pending_slot(key)) {
        // SAFETY: a valid, aligned u64 in a map value; other CPUs update it
        // only through atomics too. The bpf target has no `Atomic*` types
        // (no compare-and-swap); the intrinsic with its result unused is a
        // plain BPF atomic add (`lock *(u64 *)(r + 0) += r`).
        let _ = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, delta) };
    }
}

/// Loads `key`'s slot of the pending filter into this CPU's cache, and
/// nothing else. A SYN does it before its flow-table lookup, so that the
/// two cache misses overlap (neither waits for the other): the SYN-ACK,
/// which the host sends from the same CPU, then finds the slot it raises
/// already there. Without it the SYN-ACK paid a whole miss of its own
/// (B3's in-situ rows in BENCHMARKS.md show what that costs).
#[inline(always)]
pub fn warm_pending_slot(key: &FlowKey) {
    if let Some(slot) = PENDING.get_ptr(pending_slot(key)) {
        // SAFETY: a valid u64 in a map value; read and dropped.
        let _ = unsafe { core::ptr::read_volatile(slot) };
    }
}

/// A flow entered syn_received.
#[inline(always)]
pub fn pending_enter(key: &FlowKey) {
    pending_add(key, 1);
}

/// A flow in syn_received was freed.
#[inline(always)]
pub fn pending_leave(key: &FlowKey) {
    pending_add(key, u64::MAX); // -1, wrapping
}

/// False when no flow hashing to the segment's slot is in syn_received: an
/// ACK on this 5-tuple then cannot complete a handshake. Works on the
/// segment's fields so that a data segment never builds a flow key.
#[inline(always)]
pub fn maybe_pending(seg: &TcpSegment) -> bool {
    let ipv4 = seg.family == Family::Ipv4;
    slot_pending(pending_slot_of(
        ipv4,
        &seg.src_addr,
        &seg.dst_addr,
        seg.src_port,
        seg.dst_port,
    ))
}

/// False when no flow hashing to `slot` of the pending filter is in
/// syn_received.
#[inline(always)]
pub fn slot_pending(slot: u32) -> bool {
    // A plain read; a racing update at worst costs one lookup more or, for a
    // SYN-ACK not yet sent, one that could not match anyway.
    match PENDING.get(slot) {
        Some(n) => *n != 0,
        None => true,
    }
}

/// Which stage of a listener's funnel to count.
#[derive(Clone, Copy)]
pub enum Funnel {
    Attempt,
    SynAck,
    Completed,
    Rejected,
    Aborted,
}

/// Counts an inbound handshake event for local server port `port`.
#[inline(always)]
pub fn count_listener(port: u16, step: Funnel) {
    let slot = LISTENER_SLOTS.get(u32::from(port)).copied().unwrap_or(0);
    let Some(entry) = LISTENERS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: this CPU's copy of a per-CPU value.
    let c = unsafe { &mut *entry };
    match step {
        Funnel::Attempt => c.attempts += 1,
        Funnel::SynAck => c.synack += 1,
        Funnel::Completed => c.completed += 1,
        Funnel::Rejected => c.rejected += 1,
        Funnel::Aborted => c.aborted += 1,
    }
}

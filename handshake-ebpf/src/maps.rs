//! The maps both programs share, and the small operations on them.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use handshake_common::{
    DEFAULT_FLOW_TABLE_SIZE,
    counters::{COUNTERS_LEN, Counter, Direction, Family, MAX_IFINDEX, OTHER_IFACE_SLOT, counter_index},
    flow::{FlowKey, FlowState},
    handshake::FloodGuard,
    histogram::{LATENCY_LEN, Leg, base_index, bucket_for_ns, sum_index},
    listener::{ListenerCounters, MAX_LISTENERS, PORTS},
    parse::TcpSegment,
    pending::{PENDING_SLOTS, pending_slot, pending_slot_of},
};

/// Handshakes in progress. LRU so a full table evicts the stalest entry
/// instead of refusing new ones; the agent sizes it at load time.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);

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
pub static LISTENERS: PerCpuArray<ListenerCounters> = PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

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
#[map]
pub static BENCH_STEP: Array<u32> = Array::with_max_entries(1, 0);

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
    if let Some(slot) = COUNTERS.get_ptr_mut(counter_index(iface_slot, family, direction, counter)) {
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

/// Inserts the entry for a new attempt, within the per-CPU insert budget.
/// Replacing a live entry (port reuse) evicts nothing, so it is not charged.
#[inline(always)]
pub fn insert_new_flow(key: &FlowKey, state: &FlowState, family: Family, direction: Direction, replace: bool) {
    let iface = u32::from(state.iface_slot);
    count(iface, family, direction, Counter::Attempts);
    // SAFETY: reads of constants the loader may have rewritten.
    let budget = unsafe { core::ptr::read_volatile(&SYN_INSERT_BUDGET) };
    // u64::MAX (the default) is no budget: a frozen constant, so the
    // verifier drops the whole block.
    if !replace && budget != u64::MAX {
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
    let flags = if replace { BPF_ANY } else { BPF_NOEXIST };
    if FLOWS.insert(key, state, u64::from(flags)).is_err() {
        count(iface, family, direction, Counter::SynInsertFailed);
    }
}

/// Frees a flow's entry; true if this call freed it.
#[inline(always)]
pub fn remove_flow(key: &FlowKey) -> bool {
    FLOWS.remove(key).is_ok()
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
    slot_pending(pending_slot_of(ipv4, &seg.src_addr, &seg.dst_addr, seg.src_port, seg.dst_port))
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

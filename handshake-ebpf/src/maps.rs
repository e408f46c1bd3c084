//! The maps both programs share, and the small operations on them.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use handshake_common::{
    DEFAULT_FLOW_TABLE_SIZE,
    counters::{COUNTERS_LEN, Counter, Direction, Family, counter_index},
    flow::{FlowKey, FlowState},
    handshake::FloodGuard,
    histogram::{LATENCY_LEN, Leg, base_index, bucket_for_ns, sum_index},
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

/// New flow-table entries allowed per CPU per window; set by the agent.
#[unsafe(no_mangle)]
static SYN_INSERT_BUDGET: u64 = 16_384;
/// Length of the insert-budget window in ns; set by the agent.
#[unsafe(no_mangle)]
static SYN_INSERT_WINDOW_NS: u64 = 100_000_000;

#[inline(always)]
pub fn count(family: Family, direction: Direction, counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter_index(family, direction, counter)) {
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
    count(family, direction, Counter::Attempts);
    if !replace {
        // SAFETY: reads of constants the loader may have rewritten.
        let budget = unsafe { core::ptr::read_volatile(&SYN_INSERT_BUDGET) };
        let window = unsafe { core::ptr::read_volatile(&SYN_INSERT_WINDOW_NS) };
        let admitted = match FLOOD_GUARD.get_ptr_mut(0) {
            // SAFETY: per-CPU slot.
            Some(guard) => unsafe { (*guard).admit(state.syn_ns, window, budget) },
            None => false,
        };
        if !admitted {
            count(family, direction, Counter::SynUntracked);
            return;
        }
    }
    let flags = if replace { BPF_ANY } else { BPF_NOEXIST };
    if FLOWS.insert(key, state, u64::from(flags)).is_err() {
        count(family, direction, Counter::SynInsertFailed);
    }
}

/// Frees a flow's entry; true if this call freed it.
#[inline(always)]
pub fn remove_flow(key: &FlowKey) -> bool {
    FLOWS.remove(key).is_ok()
}

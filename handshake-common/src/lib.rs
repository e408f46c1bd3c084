//! Shared between the kernel programs (`handshake-ebpf`, no_std, bpf target)
//! and the agent (`handshake-user`, with the `user` feature).
//!
//! Everything that can be plain Rust lives here so that it is unit-tested and
//! fuzzed on the host: the packet parser ([`parse`]), the handshake state
//! machine ([`handshake`]), the flow table's rules ([`table`]), the map
//! layouts ([`flow`], [`counters`], [`histogram`]). The kernel crate only glues them to maps and helpers.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

pub mod counters;
pub mod expire;
pub mod flow;
pub mod handshake;
pub mod histogram;
pub mod listener;
pub mod parse;
pub mod pending;
pub mod table;

/// Names of the maps as they appear in the object file; the agent looks them
/// up (and pins them) by these names.
pub mod map_names {
    pub const FLOWS: &str = "FLOWS";
    pub const FLOW_SEED: &str = "FLOW_SEED";
    pub const COUNTERS: &str = "COUNTERS";
    pub const LATENCY: &str = "LATENCY";
    pub const FLOOD_GUARD: &str = "FLOOD_GUARD";
    pub const PENDING: &str = "PENDING";
    pub const LISTENERS: &str = "LISTENERS";
    pub const LISTENER_SLOTS: &str = "LISTENER_SLOTS";
    pub const IFACES: &str = "IFACES";
    pub const REPLAY_CLOCK: &str = "REPLAY_CLOCK";
}

/// Names of the programs in the object file.
pub mod program_names {
    pub const XDP_INGRESS: &str = "handshake_ingress";
    pub const TC_EGRESS: &str = "handshake_egress";
    /// The ingress program on TC, where XDP would be generic (veth, lo).
    /// The kernel keeps 15 characters of a name: "handshake_tc_in".
    pub const TC_INGRESS: &str = "handshake_tc_ingress";
    /// Never attached: run by the agent with BPF_PROG_TEST_RUN to expire one
    /// handshake (see [`crate::expire`]).
    pub const EXPIRE: &str = "handshake_expire";
}

/// Names of the load-time constants in the object.
pub mod global_names {
    /// Buckets of the flow table minus one (see [`crate::table`]).
    pub const FLOW_BUCKET_MASK: &str = "FLOW_BUCKET_MASK";
    pub const SYN_INSERT_BUDGET: &str = "SYN_INSERT_BUDGET";
    pub const SYN_INSERT_WINDOW_NS: &str = "SYN_INSERT_WINDOW_NS";
    /// Non-zero: read the time from `REPLAY_CLOCK` instead of the kernel's
    /// monotonic clock (offline replay). Constant for the verifier, so the
    /// live programs carry no trace of the branch.
    pub const CLOCK_FROM_MAP: &str = "CLOCK_FROM_MAP";
    /// Non-zero: the programs emit diagnostic events (aya-log) for segments
    /// counted invalid or unsolicited. Constant for the verifier: off, the
    /// programs carry no trace of them.
    pub const DIAGNOSTICS: &str = "DIAGNOSTICS";
    /// Non-zero in tap mode (`--no-egress`, mirrored traffic): a SYN-ACK
    /// seen before any SYN waits briefly for it (see
    /// [`crate::flow::Stage::SynAckFirst`]). Constant for the verifier.
    pub const TAP_REORDER: &str = "TAP_REORDER";
}

/// Default capacity of the flow table (entries). Overridable at load time;
/// rounded up to a power-of-two number of buckets ([`table::buckets_for`]).
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 65_536;

//! The flow table's layout and rules: a set-associative array that the
//! kernel programs manage themselves.
//!
//! Why not the kernel's LRU hash: a new flow's insert there is mostly the
//! LRU's own upkeep (free-list pops, list rotations, bucket walks), whatever
//! the table's size, and it measured several times this table's cost when
//! the design was chosen.
//!
//! Placement: a flow's hash picks two buckets of [`WAYS`] ways ([`place`]),
//! and the flow may sit in either. A new flow goes to the bucket holding
//! fewer live handshakes, into a free way or a tombstone's; only when all
//! ways of both are live does it evict, the way [`eviction_rank`] ranks
//! lowest of the two buckets (the oldest handshake still waiting for its
//! SYN-ACK, then the oldest waiting for its final ACK). With one bucket per
//! key, a few buckets overflow long before the table is full (the birthday
//! effect); two choices keep the loads even, so live handshakes are evicted
//! only near a full table (README, "How it works", has the figures). A
//! lookup reads both buckets' tags, one cache line each, and a key only
//! where a tag matches.
//!
//! Concurrency: each way's `tag` says what it holds. [`EMPTY`]; [`BUSY`]
//! while one program writes it (claimed with a compare-and-swap, so two
//! CPUs never write one way at once); otherwise the flow's tag (odd, from
//! its hash), published with a second compare-and-swap after the key and
//! state are written, or that tag less one (even, at least 4) once the
//! handshake ended or timed out: a tombstone, told from the tags alone.
//! Ending a handshake is a compare-and-swap from its tag to the tombstone
//! tag, and freeing a way one to [`EMPTY`]: of two programs completing the
//! same handshake on two CPUs, exactly one ends it and counts it. As with
//! the kernel's LRU map, whose freed elements are reused at once, a program
//! that found a flow may still update its state in place while another CPU
//! evicts it; that needs full buckets and the same nanoseconds, and costs
//! one miscounted segment, never memory safety. Two CPUs inserting the same
//! new flow at once may each place it, one in each bucket; lookups find the
//! first, and the other ages out as any unanswered handshake does.

use crate::flow::{FlowKey, FlowState, Stage};

/// Ways per bucket: a flow can sit in any of them. Eight tags fill one
/// cache line.
pub const WAYS: usize = 8;

/// Tag of a free way.
pub const EMPTY: u64 = 0;
/// Tag of a way one program is writing. Even, so never a flow's tag.
pub const BUSY: u64 = 2;

/// One way of a bucket, as a value: what it says and what it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Way {
    /// [`EMPTY`], [`BUSY`], or the flow's tag (odd).
    pub tag: u64,
    pub key: FlowKey,
    pub state: FlowState,
}

/// Lowest tag [`place`] gives a flow: its tombstone tag (one less) stays
/// clear of [`EMPTY`] and [`BUSY`].
const MIN_FLOW_TAG: u64 = 5;

/// A way with this tag holds an entry: a handshake in progress or a
/// tombstone (not free, not being written).
#[inline(always)]
#[must_use]
pub const fn is_occupied(tag: u64) -> bool {
    tag != EMPTY && tag != BUSY
}

/// A way with this tag holds a tombstone (a handshake that ended or timed
/// out), as [`tombstone_tag`] made it. Tables written before tombstones
/// were tagged hold some with their flow's tag: their state says so.
#[inline(always)]
#[must_use]
pub const fn is_tombstone_tag(tag: u64) -> bool {
    tag & 1 == 0 && tag >= MIN_FLOW_TAG - 1
}

/// A way with this tag holds a handshake in progress, going by the tag:
/// occupied, and not tagged a tombstone.
#[inline(always)]
#[must_use]
pub const fn is_live(tag: u64) -> bool {
    is_occupied(tag) && !is_tombstone_tag(tag)
}

/// The tag of a flow's tombstone.
#[inline(always)]
#[must_use]
pub const fn tombstone_tag(flow_tag: u64) -> u64 {
    flow_tag & !1
}

/// Whether a way's tag is flow `tag`'s, in progress or as a tombstone.
#[inline(always)]
#[must_use]
pub const fn same_flow(way_tag: u64, tag: u64) -> bool {
    way_tag | 1 == tag
}

/// What a way holds besides its tag: the flow's key and state, side by side
/// (96 bytes: two cache lines at most).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Entry {
    pub key: FlowKey,
    pub state: FlowState,
}

/// One value of the `FLOWS` array: [`WAYS`] ways, their tags first. A
/// lookup reads the tags, one cache line, and a way's key only where its
/// tag matches, and then finds the state beside the key; a new flow reads
/// the tags and writes one entry. With each tag beside its way's key and
/// state, the same work touched most of the bucket's lines, and a line
/// missed costs the programs more than anything else they do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Bucket {
    pub tags: [u64; WAYS],
    pub entries: [Entry; WAYS],
}

impl Bucket {
    /// Way `i` as a value.
    #[inline(always)]
    #[must_use]
    pub const fn way(&self, i: usize) -> Way {
        Way {
            tag: self.tags[i],
            key: self.entries[i].key,
            state: self.entries[i].state,
        }
    }

    /// Sets way `i` (the agent and tests; the kernel publishes a way's tag
    /// last, with a compare-and-swap).
    #[inline(always)]
    pub const fn set_way(&mut self, i: usize, way: Way) {
        self.tags[i] = way.tag;
        self.entries[i] = Entry {
            key: way.key,
            state: way.state,
        };
    }

    /// The entries the bucket holds: handshakes in progress and tombstones.
    pub fn occupied(&self) -> impl Iterator<Item = (&FlowKey, &FlowState)> {
        (0..WAYS)
            .filter(|&i| is_occupied(self.tags[i]))
            .map(|i| (&self.entries[i].key, &self.entries[i].state))
    }

    /// Whether any way holds an entry: the tags alone.
    #[inline(always)]
    #[must_use]
    pub fn any_occupied(&self) -> bool {
        self.tags.iter().any(|&t| is_occupied(t))
    }
}

/// Buckets for a table of at least `capacity` flows: a power of two, so that
/// a hash picks one with a mask.
#[must_use]
pub const fn buckets_for(capacity: u32) -> u32 {
    let buckets = capacity.div_ceil(WAYS as u32);
    if buckets <= 1 {
        1
    } else {
        buckets.next_power_of_two()
    }
}

/// Where a flow lives: its two buckets (it sits in either) and the tag its
/// way carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub buckets: [u32; 2],
    pub tag: u64,
}

/// The place of a flow whose hash is `hash`, in a table of `bucket_mask + 1`
/// buckets. The first bucket comes from the hash's low bits, the tag from
/// its high half, and the second bucket is the first moved by an odd
/// offset mixed from the high half: never the first when the table has two
/// buckets or more, and as good as independent of it.
#[inline(always)]
#[must_use]
pub const fn place(hash: u64, bucket_mask: u32) -> Place {
    let high = hash >> 32;
    let tag = high << 1 | 1;
    let first = hash as u32 & bucket_mask;
    let offset = (high.wrapping_mul(MULTIPLIER) >> 32) as u32 | 1;
    Place {
        buckets: [first, first ^ (offset & bucket_mask)],
        // Two hashes in four billion move up: a tombstone's tag (one less)
        // stays clear of EMPTY and BUSY.
        tag: if tag < MIN_FLOW_TAG {
            MIN_FLOW_TAG
        } else {
            tag
        },
    }
}

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
const fn pair(a: u32, b: u32) -> u64 {
    (a as u64) << 32 | b as u64
}

#[inline(always)]
const fn absorb(h: u64, word: u64) -> u64 {
    let h = (h ^ word).wrapping_mul(MULTIPLIER);
    h ^ (h >> 29)
}

/// The keyed hash of one end of a flow: its address and port.
#[inline(always)]
const fn endpoint_hash(addr: &[u32; 4], port: u16, seed: u64) -> u64 {
    let h = absorb(seed, pair(addr[0], addr[1]));
    let h = absorb(h, pair(addr[2], addr[3]));
    absorb(h, port as u64)
}

/// The flow table's hash of a key. `seed` is random per table (the agent
/// sets it when it creates the table), so that nobody outside can aim
/// spoofed SYNs at one bucket to evict a chosen flow.
///
/// The two ends are hashed apart and added, so a key and its reverse hash
/// alike: both directions of a connection have the same two buckets, and a
/// segment that may belong to either (a RST) is looked up in those two, not
/// four. The keys still differ, so the flows stay apart.
#[inline(always)]
#[must_use]
pub const fn flow_hash(key: &FlowKey, seed: u64) -> u64 {
    let ends = endpoint_hash(&key.src_addr, key.src_port, seed).wrapping_add(endpoint_hash(
        &key.dst_addr,
        key.dst_port,
        seed,
    ));
    // A last multiply: every input bit reaches the low bits (the bucket).
    let h = (ends ^ ends >> 32 ^ key.family as u64).wrapping_mul(MULTIPLIER);
    h ^ (h >> 32)
}

/// How much a way is worth keeping when a new flow needs its bucket: the
/// lowest rank goes. Free ways first, then tombstones, then handshakes
/// waiting for a SYN-ACK, then those waiting for the final ACK (the closest
/// to completing); within a stage, the oldest SYN. A way being written is
/// never taken.
#[inline(always)]
#[must_use]
pub const fn eviction_rank(tag: u64, state: &FlowState) -> u64 {
    if tag == EMPTY {
        return 0;
    }
    if tag == BUSY {
        return u64::MAX;
    }
    // A SYN-ACK still waiting for its SYN (tap mode) ranks with them: it is
    // most likely backscatter.
    let stage =
        if is_tombstone_tag(tag) || state.is_tombstone() || state.stage == Stage::SynAckFirst as u8
        {
            1
        } else if state.stage == Stage::SynSent as u8 {
            2
        } else {
            3
        };
    // Two bits of stage over 62 bits of SYN time (146 years of ns).
    stage << 62 | (state.syn_ns & (u64::MAX >> 2))
}

/// Live handshakes among a bucket's first `usable` ways: occupied ways
/// that are not tagged tombstones.
#[inline(always)]
#[must_use]
pub fn live_ways(bucket: &Bucket, usable: usize) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < WAYS {
        let tag = bucket.tags[i];
        if i < usable && is_live(tag) {
            n += 1;
        }
        i += 1;
    }
    n
}

/// A way of `bucket` (among its first `usable`) a new flow takes without
/// evicting a live handshake: the first free way, else the first tagged a
/// tombstone (taken from its tag alone, its state unread).
#[inline(always)]
#[must_use]
pub fn free_way(bucket: &Bucket, usable: usize) -> Option<usize> {
    let mut tombstone = WAYS;
    let mut i = 0;
    while i < WAYS {
        let tag = bucket.tags[i];
        if i < usable {
            if tag == EMPTY {
                return Some(i);
            }
            if tombstone == WAYS && is_tombstone_tag(tag) {
                tombstone = i;
            }
        }
        i += 1;
    }
    if tombstone < WAYS {
        Some(tombstone)
    } else {
        None
    }
}

/// The way a new flow takes in its two buckets, as (bucket 0 or 1, way).
/// The bucket with fewer live handshakes (the first of equals) gives a free
/// way or a tombstone's ([`free_way`]), else the other does; else the way
/// [`eviction_rank`] ranks lowest of both (the first of equals) is evicted.
/// None when all are being written. `usable` ways of each bucket are used
/// ([`WAYS`]; fewer only in the benchmarks' model of a narrower table).
///
/// `opaque` is the identity, but the kernel's hides its result from the
/// verifier: each loop here ends on one of up to sixteen constants, and
/// every path after it would be verified once per constant, and again per
/// constant of the next loop, far past the verifier's budget. Passed through
/// `opaque`, the paths meet again.
#[inline(always)]
#[must_use]
pub fn way_for_new_flow(
    buckets: [&Bucket; 2],
    usable: usize,
    opaque: impl Fn(u64) -> u64,
) -> Option<(usize, usize)> {
    let way = |i: usize| opaque(i as u64) as usize % WAYS;
    let first = opaque(live_ways(buckets[0], usable) as u64);
    let second = opaque(live_ways(buckets[1], usable) as u64);
    let target = usize::from(second < first);
    if let Some(i) = free_way(buckets[target], usable) {
        return Some((target, way(i)));
    }
    if let Some(i) = free_way(buckets[1 - target], usable) {
        return Some((1 - target, way(i)));
    }
    let mut best = 0;
    let mut best_rank = u64::MAX;
    let mut at = 0;
    while at < 2 * WAYS {
        let (b, i) = (at / WAYS, at % WAYS);
        let rank = opaque(eviction_rank(
            buckets[b].tags[i],
            &buckets[b].entries[i].state,
        ));
        if i < usable && rank < best_rank {
            best = opaque(at as u64) as usize;
            best_rank = rank;
        }
        at += 1;
    }
    if best_rank == u64::MAX {
        None
    } else {
        Some((best / WAYS % 2, best % WAYS))
    }
}

/// The first of `bucket`'s ways from `from` on whose tag is flow `tag`'s
/// (in progress, or its tombstone).
#[inline(always)]
#[must_use]
pub fn tag_match(bucket: &Bucket, tag: u64, from: usize) -> Option<usize> {
    let mut i = 0;
    while i < WAYS {
        if i >= from && same_flow(bucket.tags[i], tag) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The way of `bucket` holding the flow `key` with tag `tag` (in progress,
/// or its tombstone). Keys are compared only where tags match: at the first
/// such way and, should its key differ (two flows of one bucket with one 32-bit
/// tag), at the next. A third flow with that tag in the same bucket would
/// hide the flow; at one in four billion per pair, it is not worth a third
/// key comparison on every lookup.
///
/// `opaque` is as in [`way_for_new_flow`]: each way's key comparison,
/// written out for eight ways, made the verifier walk every path after a
/// lookup once per way.
#[inline(always)]
#[must_use]
pub fn find_with(
    bucket: &Bucket,
    key: &FlowKey,
    tag: u64,
    opaque: impl Fn(u64) -> u64,
) -> Option<usize> {
    let i = opaque(tag_match(bucket, tag, 0)? as u64) as usize % WAYS;
    if bucket.entries[i].key == *key {
        return Some(i);
    }
    let j = opaque(tag_match(bucket, tag, i + 1)? as u64) as usize % WAYS;
    if bucket.entries[j].key == *key {
        Some(j)
    } else {
        None
    }
}

/// [`find_with`] outside the kernel.
#[inline(always)]
#[must_use]
pub fn find(bucket: &Bucket, key: &FlowKey, tag: u64) -> Option<usize> {
    find_with(bucket, key, tag, core::convert::identity)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, an array of u64 and an array of two Pod structs
    // whose sizes are multiples of 8: no holes.
    unsafe impl aya::Pod for super::Bucket {}
}

#[cfg(test)]
mod tests;

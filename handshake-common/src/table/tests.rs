//! Host tests of the flow table's rules: layout, hash spread, eviction order.
extern crate std;
use std::{vec, vec::Vec};

use proptest::prelude::*;

use core::convert::identity;

use super::*;
use crate::counters::Family;

fn ipv4_key(src: u32, src_port: u16) -> FlowKey {
    FlowKey::new(
        [src, 0, 0, 0],
        [0x0a00_0001, 0, 0, 0],
        src_port,
        443,
        Family::Ipv4 as u8,
    )
}

fn live(stage: Stage, syn_ns: u64) -> Way {
    Way {
        tag: 1,
        key: FlowKey::default(),
        state: FlowState {
            stage: stage as u8,
            syn_ns,
            ..FlowState::default()
        },
    }
}

#[test]
fn layout_is_what_the_kernel_and_agent_share() {
    assert_eq!(size_of::<FlowKey>(), 40);
    assert_eq!(size_of::<FlowState>(), 56);
    assert_eq!(size_of::<Bucket>(), WAYS * (8 + 40 + 56));
    assert_eq!(align_of::<Bucket>(), 8);
    // The tags fill one cache line; an entry (key and state) spans at most two.
    assert_eq!(core::mem::offset_of!(Bucket, entries), 64);
    assert_eq!(size_of::<Entry>(), 96);
}

#[test]
fn ways_read_back_as_set() {
    let mut b = Bucket::default();
    let w = Way {
        tag: 9,
        key: ipv4_key(3, 4),
        state: FlowState {
            syn_ns: 5,
            ..FlowState::default()
        },
    };
    b.set_way(2, w);
    assert_eq!(b.way(2), w);
    assert_eq!(b.way(1), Way::default());
    assert!(b.any_occupied());
    assert_eq!(b.occupied().collect::<Vec<_>>(), vec![(&w.key, &w.state)]);
    b.tags[2] = BUSY;
    assert!(
        !b.any_occupied() && b.occupied().next().is_none(),
        "a way being written holds no flow yet"
    );
}

#[test]
fn buckets_hold_at_least_the_capacity_asked_for() {
    assert_eq!(buckets_for(65_536), 8_192);
    assert_eq!(buckets_for(1024), 128);
    assert_eq!(buckets_for(1000), 128);
    assert_eq!(buckets_for(100_000), 16_384);
    assert_eq!(buckets_for(16_777_216), 2_097_152);
    assert_eq!(buckets_for(9), 2);
    assert_eq!(buckets_for(8), 1);
    assert_eq!(buckets_for(1), 1);
    for capacity in [1u32, 3, 4, 1023, 1024, 1025, 65_535, 65_536, 1 << 21] {
        let b = buckets_for(capacity);
        assert!(
            b.is_power_of_two() && b * WAYS as u32 >= capacity,
            "{capacity}"
        );
    }
}

#[test]
fn tags_are_odd_and_buckets_in_range() {
    for h in [
        0u64,
        1,
        2,
        u64::MAX,
        0x8000_0000_0000_0000,
        0x1234_5678_9abc_def0,
    ] {
        let p = place(h, 16_383);
        assert_eq!(p.tag & 1, 1, "{h:#x}");
        assert_ne!(p.tag, BUSY);
        assert!(p.buckets.iter().all(|&b| b < 16_384));
        assert_ne!(p.buckets[0], p.buckets[1], "two buckets");
        assert_eq!(place(h, 0).buckets, [0, 0], "a one-bucket table");
        assert_eq!(place(h, 1).buckets[0] ^ place(h, 1).buckets[1], 1);
    }
    let p = place(0x0000_0005_0000_4001, 0x3fff);
    assert_eq!((p.buckets[0], p.tag), (1, 11));
}

/// Largest bucket load when `n` keys go into `n / 4` buckets: a uniform hash
/// gives a few times the mean at most.
fn max_load(keys: impl Iterator<Item = FlowKey>, buckets: u32, seed: u64) -> u32 {
    let keys: Vec<FlowKey> = keys.collect();
    let mut worst = 0;
    // Each of a flow's two buckets, taken alone, spreads as well.
    for choice in 0..2 {
        let mut load = vec![0u32; buckets as usize];
        for k in &keys {
            load[place(flow_hash(k, seed), buckets - 1).buckets[choice] as usize] += 1;
        }
        assert!(
            load.iter().filter(|&&l| l == 0).count() < buckets as usize / 10,
            "too many empty buckets"
        );
        worst = worst.max(*load.iter().max().unwrap_or(&0));
    }
    worst
}

#[test]
fn hash_spreads_stepped_addresses_ports_and_ipv6() {
    let buckets = 16_384;
    let n = buckets * 4;
    // Mean load 4: a uniform hash's maximum over 16384 buckets is ~14.
    let seed = 0x5eed;
    assert!(
        max_load(
            (0..n).map(|i| ipv4_key(0xc612_0000 + i, 40_000)),
            buckets,
            seed
        ) <= 16
    );
    assert!(
        max_load(
            (0..n).map(|i| ipv4_key(0xc612_0001, i as u16)),
            buckets,
            seed
        ) <= 16
    );
    let v6 = |i: u32| {
        FlowKey::new(
            [0x2001_0db8, 0, i >> 16, i & 0xffff],
            [0x2001_0db8, 0, 0, 1],
            40_000,
            80,
            Family::Ipv6 as u8,
        )
    };
    assert!(max_load((0..n).map(v6), buckets, seed) <= 16);
}

#[test]
fn the_seed_moves_every_flow() {
    let keys: Vec<FlowKey> = (0..1000)
        .map(|i| ipv4_key(0xc612_0000 + i, 40_000))
        .collect();
    let same = keys
        .iter()
        .filter(|k| {
            place(flow_hash(k, 1), 16_383).buckets == place(flow_hash(k, 2), 16_383).buckets
        })
        .count();
    assert!(same < 10, "{same} of 1000 kept their bucket");
}

#[test]
fn both_directions_hash_alike_and_families_apart() {
    let k = ipv4_key(0xc612_0001, 40_000);
    assert_eq!(flow_hash(&k, 7), flow_hash(&k.reversed(), 7));
    let v6k = FlowKey::new(
        [0x2001_0db8, 0, 0, 9],
        [0x2001_0db8, 0, 0, 1],
        40_000,
        443,
        Family::Ipv6 as u8,
    );
    assert_eq!(flow_hash(&v6k, 7), flow_hash(&v6k.reversed(), 7));
    let mut v6 = k;
    v6.family = Family::Ipv6 as u8;
    assert_ne!(flow_hash(&k, 7), flow_hash(&v6, 7));
}

/// Swapping the ends is the only change that keeps the hash: the same
/// address with the ports swapped, or one end's address and port crossed
/// with the other's, hash apart.
#[test]
fn only_the_whole_reverse_hashes_alike() {
    let k = FlowKey::new(
        [0xc612_0001, 0, 0, 0],
        [0xc612_0002, 0, 0, 0],
        40_000,
        80,
        Family::Ipv4 as u8,
    );
    let ports_swapped = FlowKey::new(k.src_addr, k.dst_addr, k.dst_port, k.src_port, k.family);
    let addrs_swapped = FlowKey::new(k.dst_addr, k.src_addr, k.src_port, k.dst_port, k.family);
    for other in [ports_swapped, addrs_swapped] {
        assert_ne!(flow_hash(&k, 7), flow_hash(&other, 7));
    }
}

#[test]
fn eviction_order() {
    let empty = eviction_rank(EMPTY, &FlowState::default());
    let busy = eviction_rank(BUSY, &FlowState::default());
    let rank = |w: Way| eviction_rank(w.tag, &w.state);
    let expired_new = rank(live(Stage::Expired, 1_000));
    let sent_old = rank(live(Stage::SynSent, 5));
    let sent_new = rank(live(Stage::SynSent, 1_000));
    let received_old = rank(live(Stage::SynReceived, 1));
    assert!(empty < expired_new);
    assert!(expired_new < sent_old);
    assert!(sent_old < sent_new);
    assert!(sent_new < received_old);
    assert!(received_old < busy);
    assert_eq!(busy, u64::MAX);
}

/// One bucket seen as both of a flow's, four ways used: the ranking alone.
#[test]
fn a_new_flow_takes_a_free_way_first_then_the_lowest_rank() {
    let mut b = Bucket::default();
    let pick = |b: &Bucket| way_for_new_flow([b, b], 4, identity).map(|(_, i)| i);
    assert_eq!(pick(&b), Some(0));
    for (i, w) in [
        live(Stage::SynReceived, 1),
        live(Stage::SynSent, 9),
        Way::default(),
        live(Stage::Expired, 1),
    ]
    .into_iter()
    .enumerate()
    {
        b.set_way(i, w);
    }
    // Ways past the four used stay out of it.
    b.set_way(5, Way::default());
    assert_eq!(pick(&b), Some(2));
    b.set_way(2, live(Stage::SynSent, 3));
    assert_eq!(pick(&b), Some(3), "the tombstone");
    b.set_way(3, live(Stage::SynReceived, 0));
    assert_eq!(pick(&b), Some(2), "the oldest waiting for a SYN-ACK");
    b.tags[1] = BUSY;
    b.tags[2] = BUSY;
    assert_eq!(pick(&b), Some(3), "the oldest of the rest");
    b.tags[0] = BUSY;
    b.tags[3] = BUSY;
    assert_eq!(pick(&b), None);
}

fn bucket_of(ways: &[Way]) -> Bucket {
    let mut b = Bucket::default();
    for (i, w) in ways.iter().enumerate() {
        b.set_way(i, *w);
    }
    b
}

/// Two choices: the bucket with fewer live handshakes takes the flow (the
/// first of equals), in a free way or a tombstone's; a live handshake is
/// evicted only when both are all live, the lowest ranked of both.
#[test]
fn a_new_flow_goes_where_fewer_handshakes_live() {
    let sent = |t| live(Stage::SynSent, t);
    let tomb = Way {
        tag: tombstone_tag(9),
        ..Way::default()
    };
    let empty = Bucket::default();
    assert_eq!(
        way_for_new_flow([&empty, &empty], WAYS, identity),
        Some((0, 0))
    );
    let three = bucket_of(&[sent(1), sent(2), sent(3)]);
    let two = bucket_of(&[sent(4), tomb, sent(5)]);
    assert_eq!(
        way_for_new_flow([&three, &two], WAYS, identity),
        Some((1, 3)),
        "a tombstone is not live"
    );
    assert_eq!(
        way_for_new_flow([&two, &three], WAYS, identity),
        Some((0, 3))
    );
    assert_eq!(
        way_for_new_flow([&two, &two], WAYS, identity),
        Some((0, 3)),
        "the first of equals"
    );
    let full = bucket_of(&[sent(10); WAYS]);
    let mut full_but_a_tombstone = full;
    full_but_a_tombstone.set_way(5, tomb);
    assert_eq!(
        way_for_new_flow([&full, &full_but_a_tombstone], WAYS, identity),
        Some((1, 5)),
        "a tombstone's way, no eviction"
    );
    let mut busy_and_live = full;
    busy_and_live.tags[0] = BUSY;
    // Fewer live, but nothing free: the other bucket's free way.
    assert_eq!(
        way_for_new_flow([&busy_and_live, &three], WAYS, identity),
        Some((1, 3))
    );
    let mut older = full;
    older.set_way(6, sent(7));
    assert_eq!(
        way_for_new_flow([&full, &older], WAYS, identity),
        Some((1, 6)),
        "the oldest of both buckets"
    );
    let all_busy = Bucket {
        tags: [BUSY; WAYS],
        ..Bucket::default()
    };
    assert_eq!(
        way_for_new_flow([&all_busy, &all_busy], WAYS, identity),
        None
    );
    assert_eq!(
        way_for_new_flow([&all_busy, &full], WAYS, identity),
        Some((1, 0))
    );
}

/// Keys are compared where tags match: a flow sharing its bucket and its
/// tag with another is still found, before it or after it.
#[test]
fn find_looks_past_one_flow_with_the_same_tag() {
    let (a, b) = (ipv4_key(1, 2), ipv4_key(3, 4));
    let mut bucket = Bucket::default();
    for (i, key) in [(2, a), (5, b)] {
        bucket.set_way(
            i,
            Way {
                tag: 7,
                key,
                state: FlowState::default(),
            },
        );
    }
    assert_eq!(find(&bucket, &a, 7), Some(2));
    assert_eq!(find(&bucket, &b, 7), Some(5));
    assert_eq!(find(&bucket, &ipv4_key(5, 6), 7), None);
    assert_eq!(tag_match(&bucket, 7, 3), Some(5));
    assert_eq!(tag_match(&bucket, 7, 6), None);
}

#[test]
fn find_needs_both_tag_and_key() {
    let k = ipv4_key(1, 2);
    let mut b = Bucket::default();
    b.set_way(
        2,
        Way {
            tag: 7,
            key: k,
            state: FlowState::default(),
        },
    );
    assert_eq!(find(&b, &k, 7), Some(2));
    assert_eq!(find(&b, &k, 9), None);
    assert_eq!(find(&b, &ipv4_key(1, 3), 7), None);
    b.tags[2] = BUSY;
    assert_eq!(
        find(&b, &k, 7),
        None,
        "a way being written holds no flow yet"
    );
}

prop_compose! {
    fn any_way()(tag in prop_oneof![Just(EMPTY), Just(BUSY), any::<u64>()], stage in 0u8..5, syn_ns in any::<u64>()) -> Way {
        Way { tag, key: FlowKey::default(), state: FlowState { stage, syn_ns, ..FlowState::default() } }
    }
}

proptest! {
    #[test]
    fn the_chosen_way_is_never_busy_and_evicts_only_when_it_must(
        first in proptest::array::uniform8(any_way()),
        second in proptest::array::uniform8(any_way()),
    ) {
        let buckets = [bucket_of(&first), bucket_of(&second)];
        let ways = [first, second];
        let free = |w: &Way| w.tag == EMPTY || is_tombstone_tag(w.tag);
        let live = |b: usize| live_ways(&buckets[b], WAYS);
        match way_for_new_flow([&buckets[0], &buckets[1]], WAYS, identity) {
            None => prop_assert!(ways.iter().flatten().all(|w| w.tag == BUSY)),
            Some((b, i)) => {
                let chosen = ways[b][i];
                prop_assert!(chosen.tag != BUSY);
                let target = usize::from(live(1) < live(0));
                if ways[target].iter().any(free) {
                    prop_assert_eq!(b, target, "the bucket with fewer live handshakes");
                    let empty = ways[b].iter().position(|w| w.tag == EMPTY);
                    let tomb = ways[b].iter().position(|w| is_tombstone_tag(w.tag));
                    prop_assert_eq!(Some(i), empty.or(tomb), "a free way, else a tombstone");
                } else if ways[1 - target].iter().any(free) {
                    prop_assert_eq!(b, 1 - target);
                    prop_assert!(free(&chosen));
                } else {
                    let ranks: Vec<u64> = ways.iter().flatten().map(|w| eviction_rank(w.tag, &w.state)).collect();
                    let at = b * WAYS + i;
                    prop_assert_eq!(ranks[at], *ranks.iter().min().unwrap_or(&0));
                    prop_assert!(ranks[..at].iter().all(|&r| r > ranks[at]), "the first of equals");
                }
            }
        }
    }
}

#[test]
fn a_tombstone_is_told_from_its_tag_and_still_found() {
    for hash in [0u64, 1 << 32, 2 << 32, u64::MAX, 0x1234_5678_9abc_def0] {
        let p = place(hash, 15);
        assert!(p.tag >= 5 && p.tag & 1 == 1, "{hash:#x}");
        let t = tombstone_tag(p.tag);
        assert!(is_tombstone_tag(t) && !is_tombstone_tag(p.tag));
        assert!(is_occupied(t) && is_occupied(p.tag));
        assert!(same_flow(t, p.tag) && same_flow(p.tag, p.tag));
        assert!(!same_flow(EMPTY, p.tag) && !same_flow(BUSY, p.tag));
    }
    assert!(!is_tombstone_tag(EMPTY) && !is_tombstone_tag(BUSY));
    assert!(!is_occupied(EMPTY) && !is_occupied(BUSY));
    let mut b = Bucket::default();
    let key = FlowKey::new([1, 0, 0, 0], [2, 0, 0, 0], 3, 4, 0);
    b.set_way(
        1,
        Way {
            tag: tombstone_tag(9),
            key,
            state: FlowState::default(),
        },
    );
    assert_eq!(find(&b, &key, 9), Some(1));
    for i in (0..WAYS).filter(|&i| i != 1) {
        b.set_way(i, live(Stage::SynSent, 1));
    }
    assert_eq!(
        way_for_new_flow([&b, &b], WAYS, identity),
        Some((0, 1)),
        "the tombstone, by its tag"
    );
}

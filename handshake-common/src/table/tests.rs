//! Host tests of the flow table's rules: layout, hash spread, eviction order.
extern crate std;
use std::{vec, vec::Vec};

use proptest::prelude::*;

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
    // The tags share one cache line; an entry (key and state) spans at most two.
    assert_eq!(core::mem::offset_of!(Bucket, entries), 32);
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
    assert_eq!(buckets_for(65_536), 16_384);
    assert_eq!(buckets_for(1024), 256);
    assert_eq!(buckets_for(1000), 256);
    assert_eq!(buckets_for(100_000), 32_768);
    assert_eq!(buckets_for(16_777_216), 4_194_304);
    assert_eq!(buckets_for(5), 2);
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
        assert!(p.bucket < 16_384);
    }
    assert_eq!(
        place(0x0000_0005_0000_4001, 0x3fff),
        Place { bucket: 1, tag: 11 }
    );
}

/// Largest bucket load when `n` keys go into `n / 4` buckets: a uniform hash
/// gives a few times the mean at most.
fn max_load(keys: impl Iterator<Item = FlowKey>, buckets: u32, seed: u64) -> u32 {
    let mut load = vec![0u32; buckets as usize];
    for k in keys {
        load[place(flow_hash(&k, seed), buckets - 1).bucket as usize] += 1;
    }
    assert!(
        load.iter().filter(|&&l| l == 0).count() < buckets as usize / 10,
        "too many empty buckets"
    );
    *load.iter().max().unwrap_or(&0)
}

#[test]
fn hash_spreads_stepped_addresses_ports_and_ipv6() {
    let buckets = 16_384;
    let n = buckets * WAYS as u32;
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
        .filter(|k| place(flow_hash(k, 1), 16_383).bucket == place(flow_hash(k, 2), 16_383).bucket)
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

#[test]
fn a_new_flow_takes_a_free_way_first_then_the_lowest_rank() {
    let mut b = Bucket::default();
    assert_eq!(way_for_new_flow(&b), Some(0));
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
    assert_eq!(way_for_new_flow(&b), Some(2));
    b.set_way(2, live(Stage::SynSent, 3));
    assert_eq!(way_for_new_flow(&b), Some(3), "the tombstone");
    b.set_way(3, live(Stage::SynReceived, 0));
    assert_eq!(
        way_for_new_flow(&b),
        Some(2),
        "the oldest waiting for a SYN-ACK"
    );
    b.tags[1] = BUSY;
    b.tags[2] = BUSY;
    assert_eq!(way_for_new_flow(&b), Some(3), "the oldest of the rest");
    b.tags[0] = BUSY;
    b.tags[3] = BUSY;
    assert_eq!(way_for_new_flow(&b), None);
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
    fn the_chosen_way_is_never_busy_and_ranks_lowest(ways in proptest::array::uniform4(any_way())) {
        let mut b = Bucket::default();
        for (i, w) in ways.iter().enumerate() {
            b.set_way(i, *w);
        }
        let ranks: Vec<u64> = ways.iter().map(|w| eviction_rank(w.tag, &w.state)).collect();
        let first = |f: &dyn Fn(u64) -> bool| ways.iter().position(|w| f(w.tag));
        match way_for_new_flow(&b) {
            None => prop_assert!(ways.iter().all(|w| w.tag == BUSY)),
            Some(i) => {
                prop_assert!(ways[i].tag != BUSY);
                if let Some(free) = first(&|t| t == EMPTY) {
                    prop_assert_eq!(i, free, "a free way first");
                } else if let Some(tomb) = first(&is_tombstone_tag) {
                    prop_assert_eq!(i, tomb, "then the first tombstone tag");
                } else {
                    prop_assert_eq!(ranks[i], *ranks.iter().min().unwrap_or(&0));
                    prop_assert!(ranks[..i].iter().all(|&r| r > ranks[i]), "the first of equals");
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
    for i in [0, 2, 3] {
        b.set_way(i, live(Stage::SynSent, 1));
    }
    assert_eq!(way_for_new_flow(&b), Some(1), "the tombstone, by its tag");
}

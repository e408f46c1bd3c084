//! Log2 latency histograms kept in the kernel (as ebpf_exporter's
//! `maps.bpf.h` does) and made cumulative for Prometheus by the agent.
//!
//! Bucket `i` counts latencies `l` with `2^(i-1) µs < l <= 2^i µs` (bucket 0:
//! `l <= 1 µs`), so its Prometheus upper bound is exactly `2^i` µs. The last
//! bucket takes everything larger. After the buckets comes the sum in ns.

use crate::counters::Direction;

/// Finite buckets: upper bounds 1 µs .. 2^26 µs (about 67 s).
pub const FINITE_BUCKETS: u32 = 27;
/// Finite buckets plus the overflow bucket.
pub const BUCKETS: u32 = FINITE_BUCKETS + 1;
/// Per histogram: the buckets, then the sum of latencies in ns.
pub const SLOTS_PER_HISTOGRAM: u32 = BUCKETS + 1;

/// Which leg a latency measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Leg {
    /// SYN to the first valid SYN-ACK.
    SynToSynAck = 0,
    /// SYN-ACK to the completing ACK.
    SynAckToAck = 1,
}

impl Leg {
    pub const ALL: [Self; 2] = [Self::SynToSynAck, Self::SynAckToAck];
}

/// Entries of the `LATENCY` per-CPU array: per direction, per leg.
pub const LATENCY_LEN: u32 = 2 * 2 * SLOTS_PER_HISTOGRAM;

/// Bucket for a latency in ns: ceil(log2(ceil(ns / 1000))), capped.
#[inline(always)]
pub const fn bucket_for_ns(ns: u64) -> u32 {
    let us = ns.div_ceil(1000);
    if us <= 1 {
        return 0;
    }
    let bucket = 64 - (us - 1).leading_zeros();
    if bucket >= FINITE_BUCKETS {
        FINITE_BUCKETS
    } else {
        bucket
    }
}

#[inline(always)]
pub const fn base_index(direction: Direction, leg: Leg) -> u32 {
    ((direction as u32) * 2 + leg as u32) * SLOTS_PER_HISTOGRAM
}

/// Index of the ns sum of a histogram.
#[inline(always)]
pub const fn sum_index(direction: Direction, leg: Leg) -> u32 {
    base_index(direction, leg) + BUCKETS
}

/// Upper bound of finite bucket `i`, in seconds.
pub fn upper_bound_seconds(bucket: u32) -> f64 {
    f64::from(1u32 << bucket) * 1e-6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_are_inclusive_powers_of_two_micros() {
        assert_eq!(bucket_for_ns(0), 0);
        assert_eq!(bucket_for_ns(1000), 0);
        assert_eq!(bucket_for_ns(1001), 1);
        assert_eq!(bucket_for_ns(2000), 1);
        assert_eq!(bucket_for_ns(2001), 2);
        assert_eq!(bucket_for_ns(1_000_000), 10); // 1 ms <= 1024 µs
        assert_eq!(bucket_for_ns(u64::MAX), FINITE_BUCKETS);
        for i in 1..FINITE_BUCKETS {
            let bound_ns = (1u64 << i) * 1000;
            assert_eq!(bucket_for_ns(bound_ns), i);
            assert_eq!(bucket_for_ns(bound_ns + 1), i + 1);
        }
    }

    #[test]
    fn histograms_do_not_overlap() {
        let last = sum_index(Direction::Outbound, Leg::SynAckToAck);
        assert_eq!(last + 1, LATENCY_LEN);
        assert_eq!(
            base_index(Direction::Inbound, Leg::SynAckToAck),
            SLOTS_PER_HISTOGRAM
        );
    }
}

#!/usr/bin/env python3
"""Live evictions of flow-table designs under uniformly random keys.

A model of placement only: every insert is a live handshake, none leaves.
Prints, per design, the occupancy at the first eviction over five seeds
and the share of inserts evicted by 40, 60, 80 and 95 % occupancy. The
chosen design's figures on the real programs are B4's (BENCHMARKS.md);
this is how the others were weighed (README, "How it works").

    python3 docs/flow-table-simulation.py
"""
import random

CAPACITY = 65536
MARKS = [0.4, 0.6, 0.8, 0.95]


def run(design, ways, buckets, seed):
    rnd = random.Random(seed)
    load = [0] * buckets
    first, evicted, shares = None, 0, {}
    for n in range(1, int(CAPACITY * MARKS[-1]) + 1):
        a = rnd.randrange(buckets)
        b = a ^ (rnd.randrange(buckets) | 1)
        if design == "two, less loaded":
            target = a if load[a] <= load[b] else b
        elif design == "two, first with room":
            target = a if load[a] < ways else b
        else:
            target = a
        if load[target] < ways:
            load[target] += 1
        else:
            evicted += 1
            if first is None:
                first = n / CAPACITY
        for m in MARKS:
            if n == int(CAPACITY * m):
                shares[m] = evicted * 100 / n
    return first, shares


def main():
    for design, ways in [
        ("one", 4),
        ("one", 8),
        ("two, first with room", 8),
        ("two, less loaded", 4),
        ("two, less loaded", 8),
    ]:
        out = [run(design, ways, CAPACITY // ways, s) for s in range(5)]
        firsts = sorted(round(o[0] * 100, 1) for o in out if o[0])
        shares = {f"{m:.0%}": round(sum(o[1][m] for o in out) / len(out), 4) for m in MARKS}
        print(f"{design}, {ways} ways: first at {firsts} %; evicted % by occupancy {shares}")


if __name__ == "__main__":
    main()

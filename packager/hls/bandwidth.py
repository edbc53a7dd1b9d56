"""BANDWIDTH (peak) and AVERAGE-BANDWIDTH from real segment sizes.

Peak follows the HLS definition (draft-pantos-hls-rfc8216bis, "peak segment
bit rate"): the largest bit rate of any contiguous run of segments whose total
duration is between 0.5 and 1.5 times the target duration. Taking single
segments instead would let a 40 ms tail segment with a keyframe dominate.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence


def average_bandwidth(sizes: Sequence[int], durations: Sequence[Fraction]) -> int:
    total = sum(durations, Fraction(0))
    return math.ceil(sum(sizes) * 8 / total) if total else 0


def peak_bandwidth(sizes: Sequence[int], durations: Sequence[Fraction], target: int) -> int:
    low, high = Fraction(target, 2), Fraction(target * 3, 2)
    best = Fraction(0)
    for start in range(len(sizes)):
        run_bytes, run_time = 0, Fraction(0)
        for end in range(start, len(sizes)):
            run_bytes += sizes[end]
            run_time += durations[end]
            if run_time > high:
                break
            if run_time >= low:
                best = max(best, Fraction(run_bytes * 8) / run_time)
    if best == 0:  # media shorter than half a target duration: the whole of it
        return average_bandwidth(sizes, durations)
    return math.ceil(best)

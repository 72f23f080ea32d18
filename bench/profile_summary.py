"""Summarise py-spy's collapsed stacks: where the samples go, by function (self and total).

Run: `python -m bench.profile_summary var/bench/single/profile-single-rf-worker.txt [top]`.
"""

import sys
from collections import Counter


def summarise(path: str, top: int = 25) -> None:
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    by_process: Counter[str] = Counter()
    samples = 0
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            weight = int(count)
            samples += weight
            frames = stack.split(";")
            by_process[frames[0]] += weight
            self_time[frames[-1]] += weight
            for frame in set(frames[1:]):
                total_time[frame] += weight
    print(f"{samples} samples")
    for title, counter in (("process", by_process), ("total", total_time), ("self", self_time)):
        print(f"\n== by {title}")
        for frame, weight in counter.most_common(top):
            print(f"{100 * weight / samples:6.1f}%  {frame[:150]}")


if __name__ == "__main__":
    summarise(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25)

"""One pure scheduling pass (shared/scheduling/algorithm.py) over 1,000 / 10,000 / 100,000 queued
deployments with 1,000 running: CPU time, and how it grows against n log n.

Target (issue 5): 10,000 queued in <= 50 ms of CPU.
"""

import math
import random
import statistics
import time

from shared.resources import Resources
from shared.scheduling.algorithm import Candidate, Running, plan_pass

RUNNING = 1_000
SIZES = (1_000, 10_000, 100_000)
PRIORITIES = (0, 100, 250, 500, 500, 500, 750, 900, 1000)


def _cluster(queued_count: int, seed: int = 7):
    rng = random.Random(seed)
    running = [
        Running(
            f"r{i}",
            f"running-{i}",
            rng.choice(PRIORITIES),
            Resources(rng.randrange(100, 2000, 100), rng.randrange(256, 8192, 256), rng.randrange(0, 2)),
            i,
        )
        for i in range(RUNNING)
    ]
    used = sum((r.request for r in running), Resources())
    # Nearly full: a little room, so some start, some preempt, most wait.
    capacity = used + Resources(20_000, 80_000, 20)
    queued = [
        Candidate(
            f"q{i}",
            f"queued-{i}",
            rng.choice(PRIORITIES),
            Resources(rng.randrange(100, 4000, 100), rng.randrange(256, 16384, 256), rng.randrange(0, 4)),
            i,
        )
        for i in range(queued_count)
    ]
    return capacity, running, queued


def _cpu_ms(capacity, running, queued, repeat: int) -> tuple[float, object]:
    samples, plan = [], None
    for _ in range(repeat):
        start = time.process_time()
        plan = plan_pass(capacity, running, queued)
        samples.append((time.process_time() - start) * 1000)
    return statistics.median(samples), plan


def run() -> None:
    print(
        f"{'queued':>9}{'running':>9}{'CPU ms':>9}{'started':>9}{'preempted':>11}{'waiting':>9}"
        f"{'time x':>9}{'n log n x':>11}"
    )
    previous = None
    for size in SIZES:
        capacity, running, queued = _cluster(size)
        cpu_ms, plan = _cpu_ms(capacity, running, queued, repeat=5 if size <= 10_000 else 3)
        growth = nlogn_growth = ""
        if previous:
            growth = f"{cpu_ms / previous[1]:.1f}"
            nlogn_growth = f"{size * math.log(size) / (previous[0] * math.log(previous[0])):.1f}"
        previous = (size, cpu_ms)
        print(
            f"{size:>9,}{RUNNING:>9,}{cpu_ms:>9.1f}{len(plan.starts):>9,}{len(plan.preemptions):>11,}"
            f"{len(plan.waiting):>9,}{growth:>9}{nlogn_growth:>11}"
        )
    print("target: 10,000 queued <= 50 ms CPU. 'time x' is the growth from the row above; it should stay at or")
    print("below 'n log n x' (the growth n log n predicts): the pass sorts its candidates, the rest is linear.")

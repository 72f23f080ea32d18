"""Concurrent clients: one OS process each, so their own Python time never queues on one GIL.

Each client runs its share of the requests one after another (submit, wait, next), as a
program calling the service would; all start together at a barrier.
"""

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

Work = Callable[[int], dict[str, Any]]
Setup = Callable[[], Work]


def run(setup: Setup, total: int, clients: int) -> list[dict[str, Any]]:
    """Run request 0..total-1 spread over `clients` processes; each record gets its timings.

    `setup` runs in each client process (connections made there, after the fork) and
    returns the function that does request i and returns what it learnt.
    """
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(clients + 1)
    results = context.Queue()
    workers = [
        context.Process(target=_client, args=(setup, range(c, total, clients), barrier, results))
        for c in range(clients)
    ]
    for process in workers:
        process.start()
    barrier.wait(timeout=120)
    records: list[dict[str, Any]] = []
    for _ in workers:
        outcome = results.get(timeout=600)
        if isinstance(outcome, BaseException | str):
            raise RuntimeError(f"a client failed: {outcome}")
        records.extend(outcome)
    for process in workers:
        process.join(30)
    return records


def _client(setup: Setup, indexes: range, barrier: Any, results: Any) -> None:
    try:
        work = setup()
        barrier.wait(timeout=120)
        records = []
        for index in indexes:
            started = time.perf_counter()
            record = work(index)
            record.update(index=index, started=started, finished=time.perf_counter())
            records.append(record)
        results.put(records)
    except BaseException as exc:  # reported to the parent, which fails the bench
        results.put(f"{type(exc).__name__}: {exc}")

"""The probe's sentences: for each path, what holds it back at its most clients, and what to
change, from the limit `limit_of` reads and what the point measured."""

from __future__ import annotations

from collections.abc import Sequence

from labkit.bench.setups import ASYNC
from labkit.probe.points import (
    ProbeLimit,
    ProbePoint,
    cpu_per_request_s,
    diagnose,
    growth,
    limit_of,
)


def verdict(points: Sequence[ProbePoint]) -> str:
    """One sentence for one path: what holds it back at its most clients, and what to change."""
    first, top = points[0], points[-1]
    c, result = top.concurrency, top.result
    grew = (
        f"throughput x{growth(first, top):.1f} from C={first.concurrency} to C={c}"
        if top is not first
        else f"C={c} only"
    )
    limit = limit_of(top, points)
    failing = [p for p in points if p.result.failed]
    failed = ", ".join(
        f"{p.result.failed} of {p.result.requests} at C={p.concurrency}" for p in failing
    )
    if limit == "failed":
        if result.ok == 0:
            return (
                f"{top.path}: no request succeeded ({top.failures()}): fix that first (the path? "
                f"a header? --values?). Below: what the app answered and raised."
            )
        return (
            f"{top.path}: held back by failures: {failed} failed ({top.failures()} at C={c}). "
            f"A limit measured on failing requests says nothing: fix them first. Below: what "
            f"the app answered and raised."
        )
    notes = []
    if limit != "event loop" and top.statements.held_loop:
        notes.append(
            "Its database calls run on the event loop through a sync driver: with a "
            "slower database that becomes the limit; make the route `def` or async."
        )
    if limit != "pool" and top.pool is not None and top.conns.peak_checked_out >= top.pool:
        notes.append(f"All {top.pool} pooled connections were out at once, too.")
    if limit != "threads" and top.uses_threads and result.peak_threads >= result.thread_limit:
        notes.append(f"All {result.thread_limit:g} worker threads were busy at once, too.")
    if top.uses_threads and top.threaded:
        notes.append(_thread_users(top))
    if failing:
        notes.append(f"Requests failed: {failed} ({top.failures() or 'none at the top'}).")
    held_back = _held_back_by(limit, top, points, grew)
    return " ".join([f"{top.path}: held back by {held_back}", *notes])


def _thread_users(point: ProbePoint) -> str:
    """Who ran in worker threads on `point`'s path, and whether that can hold a connection."""
    who = _listed(point.threaded)
    if point.statements_in_threads:
        return (
            f"Worker threads ran {who}, and statements ran there: each such request holds a "
            f"thread and a connection while it waits on the database."
        )
    if point.setup is ASYNC:
        return (
            f"Worker threads ran {who}, and no statement ran there: those threads hold no "
            f"connection, so they cannot stall the pool."
        )
    return f"Worker threads ran {who}; no statement ran there."


def _held_back_by(
    limit: ProbeLimit, top: ProbePoint, points: Sequence[ProbePoint], grew: str
) -> str:
    """The verdict's sentence for `limit` at the path's last point, `top`."""
    c, result = top.concurrency, top.result
    if limit == "event loop":
        return (
            f"the event loop: its database calls ran on the loop's thread through a sync driver "
            f"({top.loop_db_share:.0%} of the run at C={c}, lag p99 {result.lag_p99_ms:.0f} ms), "
            f"so requests took turns ({grew}). Make the route `def`, or use an AsyncSession on "
            f"an async driver."
        )
    if limit == "pool":
        hold_s = top.conns.mean_hold_s
        pool_rps = top.pool / hold_s if top.pool and hold_s > 0 else float("nan")
        return (
            f"the pool: all {top.pool} of its connections were checked out at C={c}, each for "
            f"{hold_s * 1000:.0f} ms on average (until the session closed), which serves at "
            f"most {pool_rps:.0f} requests a second ({grew}). Raise pool_size + max_overflow "
            f"(within what the database accepts), or hold connections for less time."
        )
    if limit == "threads":
        who = _listed(top.threaded) or "the route"
        return (
            f"the threads: all {result.thread_limit:g} of AnyIO's worker threads were busy at "
            f"C={c} ({grew}). Raise AnyIO's thread limit, or make {who} `async def`"
            + (" with an AsyncSession." if top.statements_in_threads else ".")
        )
    if limit == "cpu":
        cpu_s, app_ms = cpu_per_request_s(points), points[0].app_cpu_ms
        one_core_rps = 1 / cpu_s if cpu_s > 0 else float("nan")
        return (
            f"the CPU: {cpu_s * 1000:.1f} ms of it per request ({app_ms:.1f} ms the app's, "
            f"{cpu_s * 1000 - app_ms:.1f} ms the probe's client's) lets one core serve about "
            f"{one_core_rps:.0f} requests a second, the "
            f"model's CPU knee is near C_eff={diagnose(top, points).cpu_knee:.0f}, and the "
            f"process was busy {top.cpu_share:.0%} of a core at C={c} ({grew}). More clients will "
            f"not help; do less work per request, or run more worker processes."
        )
    if limit == "clients":
        return (
            f"nothing but the clients: throughput kept up with them ({grew}). Give "
            f"--concurrency larger values to find where it stops."
        )
    return (
        f"not the event loop, the pool, the threads or this process's CPU (busy "
        f"{top.cpu_share:.0%} of a core) as measured, yet {grew}: look for a lock (SQLite "
        f"lets one writer in at a time) or another service the route waits on."
    )


def _listed(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 2 else names)

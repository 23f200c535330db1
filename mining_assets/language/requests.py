"""Requests to the vision-language model, sent in parallel and stored as they come back: a run that dies halfway
keeps every reply it received, and one that reaches its spend cap stops sending and says what it left."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from mining_assets.warehouse import insert_rows

if TYPE_CHECKING:
    from resources.gemini import GeminiSession, Reply
    from resources.warehouse import Warehouse

T = TypeVar("T")


def send_all(
    session: GeminiSession,
    tasks: Iterable[T],
    request: Callable[[T], Reply],
    store: Callable[[list[tuple[T, Reply]]], None],
    item_errors: tuple[type[BaseException], ...] = (),
) -> list[tuple[T, str]]:
    """Send ``request(task)`` for every task on ``session.workers`` threads, at most twice that many queued, and
    hand each group of replies that came back together to ``store`` (in this thread) before sending more.

    Returns the (task, reason) of the tasks without a reply: the service failed for it (``GeminiError``, after its
    retries), its input could not be used (``item_errors``), or the run's spend cap was reached before it was sent.
    A reply whose status is not ``ok`` is stored like any other: ``store`` decides what it keeps.

    Raises:
        GeminiError: the API refused the key or does not know the model (401, 403, 404): no request can succeed,
            so the step fails (the replies stored before are kept).
    """
    from resources.gemini import GeminiError, SpendCapReached

    pending = iter(tasks)
    failed: list[tuple[T, str]] = []
    capped: str | None = None
    fatal: GeminiError | None = None
    workers = max(1, int(session.workers))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gemini") as pool:
        running: dict[Future, T] = {}

        def fill() -> None:
            while capped is None and len(running) < 2 * workers:
                task = next(pending, None)
                if task is None:
                    return
                running[pool.submit(request, task)] = task

        fill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            answered: list[tuple[T, Reply]] = []
            for future in done:
                task = running.pop(future)
                try:
                    answered.append((task, future.result()))
                except SpendCapReached as error:
                    capped = capped or str(error)
                    failed.append((task, f"not sent: {error}"))
                except GeminiError as error:
                    if error.refuses_every_request:  # a refused key or an unknown model: no request can do better
                        fatal = fatal or error
                    failed.append((task, str(error)))
                except item_errors as error:
                    failed.append((task, str(error)))
            if answered:
                store(answered)
            if fatal is not None:  # the step fails; what came back is stored
                raise fatal
            fill()
    if capped is not None:
        failed += [(task, f"not sent: {capped}") for task in pending]
    return failed


def append_shared(warehouse: Warehouse, table: str, rows: pd.DataFrame, lease: str) -> int:
    """Insert result rows of a table shared by every keyword (key ``frame_sha256, work_key``) that are not there
    yet, in one short transaction under ``lease``; how many were new."""
    if not len(rows):
        return 0
    for attempt in warehouse.retrying(lease=lease):
        with attempt as conn:
            conn.register("_new", rows)
            fresh = conn.execute(
                f"SELECT * FROM _new n WHERE NOT EXISTS (SELECT 1 FROM {table} t "
                "WHERE t.frame_sha256 = n.frame_sha256 AND t.work_key = n.work_key)"
            ).df()
            conn.unregister("_new")
            added = insert_rows(conn, table, fresh)
    return added


def usage_metadata(usage: dict[str, Any]) -> dict[str, Any]:
    """The token and cost figures every model stage shows: totals as numbers (plotted by the UI), the rest as JSON."""
    import dagster as dg

    return {
        "requests": usage.get("requests", 0),
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "cost_usd": dg.MetadataValue.float(float(usage.get("cost_usd") or 0.0)),
        "usage": dg.MetadataValue.json(usage),
    }

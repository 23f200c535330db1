"""Request budgets of external APIs, shared by every run, process and machine through the warehouse.

A budget allows at most ``per_period`` requests to one API in any ``period_s`` seconds (a sliding window, the
strictest reading of "200 per hour": it also keeps every fixed hour within the limit). Its state is the start
times of the API's latest requests, at most ``per_period`` of them, in one row of ``api_budgets``. ``take``
reserves the next free slot in one retried warehouse transaction under the lease ``budget:<api>`` (so two
processes never read the same state and both commit) and returns how long to sleep; the caller sleeps outside the
transaction, and the lease is held only for the few milliseconds the reservation takes:

    budget = SharedBudget("pexels", per_period=200, period_s=3600, warehouse=warehouse)
    budget.acquire()  # take a slot and sleep until it starts
    ...               # the request

Slots are reserved in order, so waiting callers are served first come, first served across processes. Without a
warehouse the state lives in this process (one per API, limit and period), as for code and tests that build
clients alone. Slot times are Unix seconds of the reserving machine's clock: machines that share a budget should
keep their clocks synchronised (NTP); a skew between them narrows or widens the gaps by that much, which is one
reason for ``margin_s``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resources.warehouse import Warehouse

BUDGET_TABLE = "api_budgets"


class BudgetExceeded(Exception):
    """The next free slot starts later than the caller was willing to wait; nothing was reserved."""

    def __init__(self, api: str, wait_s: float):
        super().__init__(f"request budget used up: next request allowed in {wait_s:.0f} s")
        self.api, self.wait_s = api, wait_s


def reserve_slots(
    slots: Sequence[float], now: float, per_period: int, period_s: float, cost: int = 1, margin_s: float = 0.0
) -> tuple[list[float], float]:
    """The state after reserving ``cost`` slots, and the start of the last of them.

    Each new slot is no earlier than ``now``, than the latest slot, and than ``period_s + margin_s`` after the slot
    ``per_period`` places back, so no window of ``period_s`` holds more than ``per_period`` slots even when a
    request leaves up to ``margin_s`` after its slot. Only the slots that can still bound a later one are kept.

    Args:
        slots: Start times of the latest reserved slots (Unix seconds), in any order.
        now: The current time on the same clock.
        per_period: Requests allowed in any window of ``period_s`` seconds.
        period_s: The window.
        cost: How many requests one call counts as (it may start at the last of its slots).
        margin_s: Extra space between a slot and the one ``per_period`` places later.
    """
    if per_period < 1 or period_s <= 0:
        raise ValueError("a request budget needs per_period >= 1 and period_s > 0")
    if not 1 <= cost <= per_period:
        raise ValueError(f"a call may cost 1 to {per_period} requests (got {cost})")
    log = sorted(slots)
    start = now
    for _ in range(cost):
        start = max(now, log[-1] if log else now)
        if len(log) >= per_period:
            start = max(start, log[-per_period] + period_s + margin_s)
        log.append(start)
    horizon = now - period_s - margin_s  # a slot this old no longer bounds any later one
    return [slot for slot in log[-per_period:] if slot > horizon], start


def pushed_back_slots(
    slots: Sequence[float], now: float, per_period: int, period_s: float, wait_s: float
) -> list[float]:
    """The state after the API said "wait ``wait_s`` seconds" (a 429): as if the window were full until then."""
    full_until = now + wait_s - period_s
    return sorted([*slots, *[full_until] * per_period])[-per_period:]


class _LocalState:
    def __init__(self) -> None:
        self.slots: list[float] = []
        self.lock = threading.Lock()


_LOCAL: dict[tuple[str, int, float], _LocalState] = {}
_LOCAL_LOCK = threading.Lock()


class SharedBudget:
    """At most ``per_period`` requests to ``api`` in any ``period_s`` seconds, for every holder of the same budget.

    Args:
        api: The API's name, the budget's row (``pexels``, ``youtube``).
        per_period: Requests allowed in any window of ``period_s`` seconds.
        period_s: The window.
        warehouse: Where the state lives, shared by every process that opens the same lake; None keeps it in this
            process (shared by every budget of this api, limit and period here).
        margin_s: Extra seconds between a slot and the one ``per_period`` later: the room a request has to leave
            late (the reservation's commit, clock skew between machines) without breaking the limit at the API.
        clock: Unix seconds; injectable for tests of the process-local budget.
        sleep: How ``acquire`` waits.
    """

    def __init__(
        self,
        api: str,
        per_period: int,
        period_s: float,
        warehouse: Warehouse | None = None,
        margin_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if per_period < 1 or period_s <= 0 or margin_s < 0:
            raise ValueError("a request budget needs per_period >= 1, period_s > 0 and margin_s >= 0")
        self.api, self.per_period, self.period_s, self.margin_s = api, per_period, period_s, margin_s
        self.warehouse = warehouse
        self._clock, self._sleep = clock, sleep

    @property
    def lease_name(self) -> str:
        return f"budget:{self.api}"

    def _update(self, change: Callable[[list[float], float], tuple[list[float] | None, Any]]) -> Any:
        """Apply ``change(slots, now) -> (new slots or None to leave them, result)`` atomically; the result."""
        if self.warehouse is None:
            key = (self.api, self.per_period, self.period_s)
            with _LOCAL_LOCK:
                state = _LOCAL.setdefault(key, _LocalState())
            with state.lock:
                new, result = change(list(state.slots), self._clock())
                if new is not None:
                    state.slots = new
            return result
        for attempt in self.warehouse.retrying(lease=self.lease_name):
            with attempt as conn:
                row = conn.execute(f"SELECT slots FROM {BUDGET_TABLE} WHERE api = ?", [self.api]).fetchone()
                old = list(row[0]) if row else None
                new, result = change(old or [], self._clock())
                if new is not None and row is None:
                    conn.execute(
                        "INSERT INTO api_budgets (api, slots, updated_at) VALUES (?, ?, now()::TIMESTAMP)",
                        [self.api, new],
                    )
                elif new is not None and new != old:
                    conn.execute(
                        "UPDATE api_budgets SET slots = ?, updated_at = now()::TIMESTAMP WHERE api = ?",
                        [new, self.api],
                    )
        return result

    def reserve(self, cost: int = 1, max_wait: float = math.inf) -> float:
        """Reserve the next free slot(s) and return when the call may start (Unix seconds on ``clock``).

        Raises:
            BudgetExceeded: it would start more than ``max_wait`` seconds from now (nothing is reserved).
        """

        def change(slots: list[float], now: float) -> tuple[list[float] | None, float | BudgetExceeded]:
            new, start = reserve_slots(slots, now, self.per_period, self.period_s, cost, self.margin_s)
            if start - now > max_wait:
                return None, BudgetExceeded(self.api, start - now)
            return new, start

        start = self._update(change)
        if isinstance(start, BudgetExceeded):
            raise start
        return start

    def take(self, cost: int = 1, max_wait: float = math.inf) -> float:
        """Reserve the next free slot(s); seconds to sleep before the call (0 when it may start now).

        Raises:
            BudgetExceeded: the wait would be longer than ``max_wait`` (nothing is reserved).
        """
        return max(0.0, self.reserve(cost, max_wait) - self._clock())

    def acquire(self, cost: int = 1, max_wait: float = math.inf) -> None:
        """Reserve the next free slot(s) and sleep until they start.

        Raises:
            BudgetExceeded: the wait would be longer than ``max_wait`` (nothing is reserved).
        """
        wait = self.take(cost, max_wait)
        if wait > 0:
            self._sleep(wait)

    def push_back(self, wait_s: float) -> None:
        """After a 429: no request of this budget starts within ``wait_s`` seconds from now."""

        def change(slots: list[float], now: float) -> tuple[list[float], None]:
            return pushed_back_slots(slots, now, self.per_period, self.period_s, wait_s), None

        self._update(change)

    def wait_time(self) -> float:
        """Seconds until a call could start (0 when one could start now), without reserving anything."""

        def change(slots: list[float], now: float) -> tuple[None, float]:
            _, start = reserve_slots(slots, now, self.per_period, self.period_s, 1, self.margin_s)
            return None, max(0.0, start - now)

        return self._update(change)

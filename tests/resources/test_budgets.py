"""Request budgets: the slot arithmetic, the process-local budget on a fake clock, and the budget shared through
the warehouse by several processes on both catalogs (embedded and PostgreSQL + S3)."""

import multiprocessing

import pytest

from resources.budgets import BudgetExceeded, SharedBudget, pushed_back_slots, reserve_slots
from resources.warehouse import Warehouse


def most_in_any_window(times: list[float], period_s: float) -> int:
    """The largest number of times in one half-open window [t, t + period_s)."""
    ordered = sorted(times)
    return max((sum(1 for u in ordered[i:] if u < t + period_s) for i, t in enumerate(ordered)), default=0)


def test_most_in_any_window_counts_half_open_windows():
    assert most_in_any_window([0.0, 1.0, 2.0, 3.0], 3.0) == 3
    assert most_in_any_window([0.0, 0.0, 2.9, 5.0], 3.0) == 3
    assert most_in_any_window([], 3.0) == 0


@pytest.mark.parametrize(
    ("slots", "now", "cost", "margin", "start", "kept"),
    [
        ([], 10.0, 1, 0.0, 10.0, [10.0]),  # an empty budget: now
        ([9.0, 9.5], 10.0, 1, 0.0, 10.0, [9.0, 9.5, 10.0]),  # room left in the window: now
        ([8.0, 9.0, 9.5], 10.0, 1, 0.0, 68.0, [9.0, 9.5, 68.0]),  # full: 60 s after the slot 3 places back
        ([8.0, 9.0, 9.5], 10.0, 1, 2.0, 70.0, [9.0, 9.5, 70.0]),  # the margin widens the gap
        ([8.0, 9.0, 9.5], 10.0, 2, 0.0, 69.0, [9.5, 68.0, 69.0]),  # a call of cost 2 starts at its last slot
        ([9.5, 8.0, 9.0], 10.0, 1, 0.0, 68.0, [9.0, 9.5, 68.0]),  # stored order does not matter
        ([-100.0, -60.0, 5.0], 10.0, 1, 0.0, 10.0, [5.0, 10.0]),  # slots older than a window are dropped
        ([20.0], 10.0, 1, 0.0, 20.0, [20.0, 20.0]),  # never before a slot already reserved: first come, first served
    ],
)  # fmt: skip
def test_reserve_slots(slots, now, cost, margin, start, kept):
    assert reserve_slots(slots, now, per_period=3, period_s=60.0, cost=cost, margin_s=margin) == (kept, start)


@pytest.mark.parametrize(("per_period", "period_s", "cost"), [(0, 60.0, 1), (3, 0.0, 1), (3, 60.0, 0), (3, 60.0, 4)])
def test_reserve_slots_refuses_impossible_budgets(per_period, period_s, cost):
    with pytest.raises(ValueError):
        reserve_slots([], 0.0, per_period, period_s, cost)


def test_slots_reserved_one_after_another_never_exceed_the_rate():
    slots, starts = [], []
    for now in [0.0] * 25 + [30.0] * 10 + [200.0] * 5:
        slots, start = reserve_slots(slots, now, per_period=7, period_s=60.0)
        starts.append(start)
        assert len(slots) <= 7
    assert most_in_any_window(starts, 60.0) == 7
    assert starts == sorted(starts)


def test_a_push_back_fills_the_window_until_the_wait_ends():
    slots = pushed_back_slots([1.0], now=10.0, per_period=3, period_s=60.0, wait_s=30.0)
    assert slots == [-20.0, -20.0, 1.0]
    assert reserve_slots(slots, 10.0, 3, 60.0)[1] == 40.0
    later = pushed_back_slots([50.0, 55.0], now=10.0, per_period=3, period_s=60.0, wait_s=30.0)
    assert later == [-20.0, 50.0, 55.0]  # slots already reserved later stay


class FakeClock:
    def __init__(self, now: float = 1_000.0):
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def local_budget(name: str, per_period: int, period_s: float, clock: FakeClock) -> SharedBudget:
    return SharedBudget(f"test-{name}", per_period, period_s, clock=clock, sleep=clock.sleep)


def test_a_local_budget_allows_the_limit_per_window_then_waits():
    clock = FakeClock()
    budget = local_budget("window", 3, 60.0, clock)
    for _ in range(3):
        budget.acquire()
    assert clock.slept == []
    clock.now += 10.0
    budget.acquire()  # the 4th call waits until the first leaves the window
    assert clock.slept == [50.0]
    budget.acquire()
    budget.acquire()  # three calls at t=60 fill the window again
    assert clock.slept == [50.0]
    with pytest.raises(BudgetExceeded, match="budget used up: next request allowed in 60 s"):
        budget.acquire(max_wait=1.0)
    assert budget.wait_time() == pytest.approx(60.0)  # the refused call reserved nothing


def test_local_budgets_of_one_api_and_limit_share_their_slots():
    clock = FakeClock()
    first, second = local_budget("shared", 2, 60.0, clock), local_budget("shared", 2, 60.0, clock)
    assert (first.take(), second.take(), first.take()) == (0.0, 0.0, 60.0)


def test_a_local_budget_after_a_429():
    clock = FakeClock()
    budget = local_budget("push-back", 100, 60.0, clock)
    budget.push_back(30.0)
    assert budget.wait_time() == pytest.approx(30.0)
    budget.acquire()
    assert clock.slept == [pytest.approx(30.0)]


def settings_of(warehouse: Warehouse) -> dict:
    """A warehouse's settings, to rebuild it in another process (resources don't pickle)."""
    return {name: getattr(warehouse, name) for name in Warehouse.model_fields}


def _taker(settings: dict, api: str, takes: int, barrier, queue) -> None:
    """Reserve ``takes`` slots of a 5-per-second budget shared through the lake, reporting their start times."""
    warehouse = Warehouse(**settings)
    budget = SharedBudget(api, per_period=5, period_s=1.0, warehouse=warehouse)
    try:
        warehouse.execute("SELECT 1")  # attached before the start, so that the two processes overlap
        barrier.wait(timeout=120)
        queue.put(("ok", [budget.reserve() for _ in range(takes)]))
    except Exception as error:  # reported to the parent, which fails the test with it
        queue.put(("error", f"{type(error).__name__}: {error}"))


def test_two_processes_share_one_budget_through_the_lake(lake):
    """Two processes reserve slots of one API at once, each through its own Warehouse on the same lake: together
    their slots stay within 5 per second, and the API keeps one row."""
    lake.execute("SELECT 1")  # schema made before the takers start
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(2), context.Queue()
    takers = [context.Process(target=_taker, args=(settings_of(lake), "test-api", 12, barrier, queue)) for _ in "ab"]
    for taker in takers:
        taker.start()
    outcomes = [queue.get(timeout=240) for _ in takers]
    for taker in takers:
        taker.join(timeout=30)
    assert [kind for kind, _ in outcomes] == ["ok", "ok"], outcomes
    starts = [start for _, slots in outcomes for start in slots]
    assert len(starts) == 24
    assert most_in_any_window(starts, 1.0) == 5  # each process alone would have had its 5 too
    (row,) = lake.query_dicts("SELECT api, len(slots) AS kept FROM api_budgets")  # one row: no duplicate state
    assert row["api"] == "test-api" and 1 <= row["kept"] <= 5  # at most one window's worth of slots is kept
    assert lake.held_leases() == []  # every lease released


def test_a_shared_budget_refuses_a_long_wait_and_reserves_nothing(tmp_path):
    lake = Warehouse(catalog=f"sqlite:{tmp_path}/lake/catalog.sqlite", data_path=f"{tmp_path}/lake/data/")
    budget = SharedBudget("test-refusal", per_period=2, period_s=3600.0, warehouse=lake)
    other = SharedBudget("test-refusal", per_period=2, period_s=3600.0, warehouse=lake.model_copy())
    assert budget.take() == 0.0 and other.take() == 0.0
    with pytest.raises(BudgetExceeded, match=r"next request allowed in (35\d\d|3600) s"):
        other.take(max_wait=60.0)
    assert len(lake.execute("SELECT slots FROM api_budgets WHERE api = 'test-refusal'")[0][0]) == 2
    other.push_back(7200.0)
    assert budget.wait_time() == pytest.approx(7200.0, abs=5)

"""What a run's event log says of its steps: each step's own time (wall clock, and this process's CPU time over the
same span), the numeric metadata its assets reported, and the fixed cost of a step (one that does nothing, one that
reads the warehouse once), for benchmarks that compare in-process runs."""

import bisect
import statistics
import threading
import time

import dagster as dg

from mining_assets.partitions import keyword_partitions
from resources.warehouse import Warehouse

QUIET = {"console": {"config": {"log_level": "WARNING"}}}  # the event log stays whole; only the console is quiet


class CpuClock:
    """This process's CPU time (all its threads), sampled on a thread of its own every ``every_s``, so that the CPU
    time between two moments of the event log can be read afterwards. Unlike wall time, it hardly moves with what
    other processes on a shared machine do; it leaves out the time spent waiting (disk, locks)."""

    def __init__(self, every_s: float = 0.01) -> None:
        self.every_s = every_s
        self.samples = [(time.time(), time.process_time())]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="cpu-clock", daemon=True)

    def __enter__(self) -> "CpuClock":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append((time.time(), time.process_time()))

    def at(self, moment: float) -> float:
        """The process's CPU seconds at wall-clock ``moment`` (``time.time()``), between the samples around it."""
        samples = list(self.samples)
        index = bisect.bisect_left(samples, (moment,))
        if index == 0 or index == len(samples):
            return samples[min(index, len(samples) - 1)][1]
        (t0, cpu0), (t1, cpu1) = samples[index - 1], samples[index]
        return cpu0 + (cpu1 - cpu0) * (moment - t0) / ((t1 - t0) or 1.0)


def step_spans(instance: dg.DagsterInstance, run_id: str) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    """Each step's own spans (every attempt, from its start to its success, failure or retry) and the steps that
    failed."""
    started: dict[str, float] = {}
    spent: dict[str, list[tuple[float, float]]] = {}
    failed = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        kind = event.event_type_value
        if kind in ("STEP_START", "STEP_RESTARTED"):
            started[event.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_UP_FOR_RETRY") and event.step_key in started:
            spent.setdefault(event.step_key, []).append((started.pop(event.step_key), entry.timestamp))
            if kind == "STEP_FAILURE":
                failed.append(event.step_key)
    return spent, failed


def numeric_metadata(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, float]]:
    """The numbers in each asset's materialization metadata in the run, by asset and key."""
    found: dict[str, dict[str, float]] = {}
    for entry in instance.all_logs(run_id):
        materialization = entry.asset_materialization
        if materialization is None:
            continue
        numbers = found.setdefault(materialization.asset_key.to_user_string(), {})
        for name, value in materialization.metadata.items():
            number = getattr(value, "value", value)
            if isinstance(number, int | float) and not isinstance(number, bool):
                numbers[name] = number
    return found


def _reported(rows: int) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": rows}, check_results=[dg.AssetCheckResult(check_name="done",
                                                                                            passed=True)])  # fmt: skip


def idle_assets(count: int, reads: bool) -> list[dg.AssetsDefinition]:
    """A chain of ``count`` keyword assets that report as a stage does (metadata and a check) and do nothing else,
    or (``reads``) only count the keyword's frames in the warehouse, in one transaction."""
    made: list[dg.AssetsDefinition] = []
    for index in range(count):
        name = f"{'lookup' if reads else 'idle'}_{index}"
        options = {"name": name, "partitions_def": keyword_partitions, "deps": made[-1:],
                   "check_specs": [dg.AssetCheckSpec("done", asset=name)]}  # fmt: skip
        if reads:

            @dg.asset(**options)
            def step(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
                for attempt in warehouse.retrying():
                    with attempt as conn:
                        sql = "SELECT count(*) FROM frames WHERE partition_key = ?"
                        (rows,) = conn.execute(sql, [context.partition_key]).fetchone()
                return _reported(rows)
        else:

            @dg.asset(**options)
            def step(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
                return _reported(0)

        made.append(step)
    return made


def step_seconds(spans: dict[str, list[tuple[float, float]]], clock: CpuClock | None = None) -> dict[str, float]:
    """Each step's wall seconds, or with ``clock`` its CPU seconds, summed over its spans."""
    if clock is None:
        return {step: sum(end - start for start, end in found) for step, found in spans.items()}
    return {step: sum(clock.at(end) - clock.at(start) for start, end in found) for step, found in spans.items()}


def fixed_step_cost(
    instance: dg.DagsterInstance, warehouse: Warehouse, key: str, clock: CpuClock, steps: int = 8
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of a step that does nothing and of one that reads the warehouse once (the lake
    attached already), each over a run of ``steps`` such steps for partition ``key``."""
    instance.add_dynamic_partitions("keyword", [key])
    warehouse.execute("SELECT 1")
    costs = {}
    for reads in (False, True):
        result = dg.materialize(idle_assets(steps, reads), partition_key=key, instance=instance,
                                resources={"warehouse": warehouse}, run_config={"loggers": QUIET})  # fmt: skip
        spans, _ = step_spans(instance, result.run_id)
        wall, cpu = step_seconds(spans).values(), step_seconds(spans, clock).values()
        costs["reads" if reads else "nothing"] = (statistics.median(wall), statistics.median(cpu))
    return costs

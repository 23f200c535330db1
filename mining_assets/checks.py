"""The checks every stage shares: `produced_output`, a warning when a keyword's stage had input and produced nothing
(or had no input at all), and the small helpers stages' own checks read the raw state with.

A stage that turns 5 frames into 0 accepted frames, or an empty upload folder into 0 items, runs green; without this
check nothing in the UI says the keyword's partition is empty. The check warns (never blocks): an empty result can
be right (a keyword with no photos of people), but it should be seen, with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from resources.blob_store import BlobStore

PRODUCED_OUTPUT = "produced_output"


def output_spec(asset: str, what: str) -> dg.AssetCheckSpec:
    """The `produced_output` check of a stage asset; ``what`` names its output (``"accepted frames"``)."""
    return dg.AssetCheckSpec(
        PRODUCED_OUTPUT,
        asset=asset,
        description=f"Warns when the keyword had input but {asset} produced no {what}, or had no input at all.",
    )


def output_check(
    inputs: int, outputs: int, reason: str, upstream: str | None = None, optional: bool = False
) -> dg.AssetCheckResult:
    """The `produced_output` result: passes when the stage had input and produced something.

    Args:
        inputs: How many items the stage had to work on for the partition.
        outputs: How many it produced (or accepted).
        reason: Why it produced nothing from its input; shown only when it did.
        upstream: What its input is read from; with no input, the reason names it instead. None: the stage has
            no upstream table, and ``reason`` says why there was no input too.
        optional: No input is normal for this stage (video_frames of a keyword of photos): it passes then.
    """
    passed = (inputs > 0 and outputs > 0) or (optional and not inputs)
    if not inputs and upstream:
        reason = f"no input: {upstream} has no rows for this keyword"
    return dg.AssetCheckResult(
        check_name=PRODUCED_OUTPUT,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"inputs": int(inputs), "outputs": int(outputs), "reason": "" if passed else reason},
    )


def first_reasons(errors: Sequence[tuple[str, str]], count: int = 2) -> str:
    """``"; first: item: reason, ..."`` of recorded (item, reason) errors, for a `produced_output` reason."""
    if not errors:
        return ""
    return f"; {len(errors)} failed, first: " + ", ".join(f"{item}: {reason}" for item, reason in errors[:count])


def nothing_passed(scores: Sequence[float], threshold: float, errors: Sequence[tuple[str, str]]) -> str:
    """Why a stage that accepts frames by score accepted none: none reached the threshold (the best score named),
    or none could be scored (the first errors named)."""
    if len(scores):
        best = max(float(score) for score in scores)
        return f"none of the {len(scores)} scored frames reached the threshold {threshold} (best score {best:.3f})"
    return "no frame could be scored" + first_reasons(errors)


def sources_asked(config: Any) -> list[str]:
    """The sources a media_registry config (resolved for the run) asks, by name: ``youtube search``, each URL,
    ``local folder <dir>``, ``upload bucket``, each stock API."""
    names = ["youtube search"] if config.youtube_search else []
    names += list(config.urls)
    names += [f"local folder {config.local_dir}"] if config.local_dir else []
    names += ["upload bucket"] if config.uploads or config.s3_keys or config.s3_objects else []
    return names + list(config.stock_sources or [])


def missing_blobs(blob_store: BlobStore, keys: Iterable[str]) -> list[str]:
    """The keys not in the store, sorted: one listing per folder, so only for keys whose folders are small and
    their own (a video sample's frames), not for shared folders such as ``photos/``."""
    by_folder: dict[str, set[str]] = {}
    for key in keys:
        by_folder.setdefault(key.rsplit("/", 1)[0], set()).add(key)
    missing: list[str] = []
    for folder, wanted in sorted(by_folder.items()):
        missing += sorted(wanted - set(blob_store.list_keys(folder)))
    return missing

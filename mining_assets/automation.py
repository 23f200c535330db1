"""Declarative automation and freshness policies of the asset graph, chosen from the environment at load time.

Automation: a stage with ``AutomationCondition.eager()`` follows its upstream per keyword partition. A partition is
requested when a parent partition was updated (or the partition became missing) since the stage last ran or was
requested, unless a parent is missing or in progress, or the partition itself is in progress. Requests of one tick
for the same keyword go into one run, so a new ``frames`` partition brings its whole automated downstream in one run.

- The source stages (media_registry, media, video_frames) are not automated: the source jobs, which the sensors and
  the UI start with their run config (sources, sampling settings), always materialize them with frames. A condition
  on them could only fire after a source run failed part-way, and would re-run the stage with the default config.
- ``frames`` and the stages that only de-duplicate, convert, count or write what the models produced (unique_frames,
  coco_annotations, detection_visualizations, pose_datasets, unique_categories) always follow.
- The model stages follow as ``MINING_AUTOMATE_MODEL_STAGES`` says: ``auto`` (default) the MediaPipe stages
  (quality_scores, poses: about 30 ms a frame on a CPU), and the torch stages (filtered_frames, frame_embeddings,
  detections) only where they have an NVIDIA GPU; ``all``; ``none``; or a comma list of model stages.
- mongo_export is never automated: it needs a MongoDB (MONGODB_URI), which the embedded defaults do not have.
- descriptions is never automated: each image it sends costs money (Gemini); category_reports compares datasets
  a person chooses. ``categories`` is a torch stage (SigLIP zero-shot without a Gemini key).

Dagster creates a ``default_automation_condition_sensor`` by itself, but stopped; ``automation_sensor`` takes its
place and runs from the start (``MINING_AUTOMATION_SENSOR=stopped`` to start it stopped), so the stages move with
nothing switched on by hand.

Freshness: a ``FreshnessPolicy.time_window`` on media_registry, frames, coco_annotations, pose_datasets and
mongo_export, fail and warn windows in hours from ``MINING_FRESHNESS_HOURS`` / ``MINING_FRESHNESS_WARN_HOURS`` and
``MINING_FRESHNESS_<ASSET>_HOURS`` / ``MINING_FRESHNESS_<ASSET>_WARN_HOURS``. The daemon judges each asset by its
newest materialization of any keyword partition.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta

import dagster as dg

FOLLOWING_STAGES = (
    "frames",
    "unique_frames",
    "coco_annotations",
    "detection_visualizations",
    "pose_datasets",
    "unique_categories",
)
TORCH_STAGES = ("filtered_frames", "frame_embeddings", "detections", "categories")
MEDIAPIPE_STAGES = ("quality_scores", "poses")
MODEL_STAGES = TORCH_STAGES + MEDIAPIPE_STAGES
FRESHNESS_ASSETS = ("media_registry", "frames", "coco_annotations", "pose_datasets", "mongo_export")

MODEL_STAGES_SETTING = "MINING_AUTOMATE_MODEL_STAGES"
SENSOR_SETTING = "MINING_AUTOMATION_SENSOR"
FRESHNESS_SETTING = "MINING_FRESHNESS_HOURS"
FRESHNESS_WARN_SETTING = "MINING_FRESHNESS_WARN_HOURS"
DEFAULT_FAIL_HOURS = 48.0
OFF = "off"
# what the NVIDIA driver creates (a container is given its GPUs' own device numbers, not always nvidia0); looking
# for them costs a directory listing, where asking torch would import it
NVIDIA_PATHS = ("/dev/nvidia[0-9]*", "/proc/driver/nvidia/gpus/*")
SENSOR_NAME = "automation_sensor"


def _environment(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def has_nvidia_gpu(env: Mapping[str, str] | None = None, paths: Sequence[str] = NVIDIA_PATHS) -> bool:
    """Whether the torch stages get an NVIDIA GPU: MINING_MODEL_DEVICE names cuda, a run on Kubernetes asks for
    GPUs (MINING_K8S_GPUS_PER_RUN > 0), or, with the device on ``auto``, a GPU of the NVIDIA driver is on this
    machine (one of ``paths``, glob patterns, exists).

    Another device (``cpu``, ``mps``) counts as none: set MINING_AUTOMATE_MODEL_STAGES=all to automate anyway.
    """
    env = _environment(env)
    device = (_setting(env, "MINING_MODEL_DEVICE") or "auto").lower()
    if device.startswith("cuda"):
        return True
    if int(env.get("MINING_K8S_GPUS_PER_RUN") or 0) > 0:
        return True
    return device == "auto" and any(glob.glob(pattern) for pattern in paths)


def automated_model_stages(env: Mapping[str, str] | None = None, gpu: bool | None = None) -> frozenset[str]:
    """The model stages that follow their upstream, as MINING_AUTOMATE_MODEL_STAGES says.

    Args:
        env: The environment to read (default: the process's).
        gpu: Whether the torch stages have an NVIDIA GPU; None: :func:`has_nvidia_gpu`.

    Raises:
        ValueError: the setting names something that is not a model stage.
    """
    env = _environment(env)
    setting = (_setting(env, MODEL_STAGES_SETTING) or "auto").lower()
    if setting == "auto":
        with_gpu = has_nvidia_gpu(env) if gpu is None else gpu
        return frozenset(MEDIAPIPE_STAGES + TORCH_STAGES if with_gpu else MEDIAPIPE_STAGES)
    if setting == "all":
        return frozenset(MODEL_STAGES)
    if setting == "none":
        return frozenset()
    names = {name.strip() for name in setting.split(",") if name.strip()}
    unknown = sorted(names - set(MODEL_STAGES))
    if unknown:
        raise ValueError(
            f"{MODEL_STAGES_SETTING}={env[MODEL_STAGES_SETTING]!r}: not a model stage: {', '.join(unknown)}. "
            f"Use auto, all, none or a comma list of: {', '.join(MODEL_STAGES)}"
        )
    return frozenset(names)


def automated_assets(env: Mapping[str, str] | None = None, gpu: bool | None = None) -> frozenset[str]:
    """Every asset that carries an automation condition: the following stages and the chosen model stages."""
    return frozenset(FOLLOWING_STAGES) | automated_model_stages(env, gpu)


def _setting(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value without surrounding blanks; None when unset or blank."""
    return (env.get(name) or "").strip() or None


def _hours(env: Mapping[str, str], name: str) -> float | None:
    """A window in hours read from the (set) variable ``name``: None for ``off``."""
    text = _setting(env, name) or ""
    if text.lower() == OFF:
        return None
    try:
        hours = float(text)
    except ValueError:
        raise ValueError(f"{name}={env[name]!r}: expected a number of hours (e.g. 48 or 0.5) or {OFF!r}") from None
    if not 1 <= hours * 60 < float("inf"):  # NaN fails too
        raise ValueError(f"{name}={env[name]!r}: a window is at least 1 minute (0.017 hours), or {OFF!r} for none")
    return hours


def _asset_setting(asset: str, warn: bool = False) -> str:
    return f"MINING_FRESHNESS_{asset.upper()}_{'WARN_' if warn else ''}HOURS"


def freshness_policies(env: Mapping[str, str] | None = None) -> dict[str, dg.FreshnessPolicy]:
    """The freshness policy of each of FRESHNESS_ASSETS, by asset name (an asset whose window is ``off`` has none).

    Fail window: MINING_FRESHNESS_<ASSET>_HOURS, else MINING_FRESHNESS_HOURS, else 48 hours. Warn window:
    MINING_FRESHNESS_<ASSET>_WARN_HOURS, else MINING_FRESHNESS_WARN_HOURS, else half the fail window; ``off``
    for no warning.

    Raises:
        ValueError: a window is not a number of hours, is under a minute, a warn window is not shorter than its
            fail window, or a MINING_FRESHNESS_..._HOURS variable names no asset with a policy.
    """
    env = _environment(env)
    known = {FRESHNESS_SETTING, FRESHNESS_WARN_SETTING}
    known |= {_asset_setting(asset, warn) for asset in FRESHNESS_ASSETS for warn in (False, True)}
    unknown = sorted(
        name for name in env if name.startswith("MINING_FRESHNESS_") and name.endswith("_HOURS") and name not in known
    )
    if unknown:
        raise ValueError(
            f"unknown freshness setting {', '.join(unknown)}: the assets with a freshness policy are "
            f"{', '.join(FRESHNESS_ASSETS)} (MINING_FRESHNESS_<ASSET>_HOURS, MINING_FRESHNESS_<ASSET>_WARN_HOURS)"
        )
    policies = {}
    for asset in FRESHNESS_ASSETS:
        fail_name = next((n for n in (_asset_setting(asset), FRESHNESS_SETTING) if _setting(env, n)), None)
        fail = _hours(env, fail_name) if fail_name else DEFAULT_FAIL_HOURS
        if fail is None:
            continue
        warn_name = next((n for n in (_asset_setting(asset, True), FRESHNESS_WARN_SETTING) if _setting(env, n)), None)
        warn = _hours(env, warn_name) if warn_name else fail / 2
        if warn is not None and warn >= fail:
            raise ValueError(
                f"{warn_name}={env[warn_name]!r}: the warn window must be shorter than the fail window of {asset} "
                f"({fail:g} hours, from {fail_name or 'the default'})"
            )
        policies[asset] = dg.FreshnessPolicy.time_window(
            fail_window=timedelta(hours=fail), warn_window=None if warn is None else timedelta(hours=warn)
        )
    return policies


def with_policies(
    env: Mapping[str, str] | None = None, gpu: bool | None = None
) -> Callable[[dg.AssetSpec], dg.AssetSpec]:
    """A function that gives an asset spec its automation condition and freshness policy as the environment sets
    them. Only the stages this module knows are touched, and each of them either way: a stage that is not automated
    loses a condition an earlier call gave it.

    Raises:
        ValueError: a setting is invalid (read once, here, not per spec).
    """
    automated = automated_assets(env, gpu)
    policies = freshness_policies(env)

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        if name in FOLLOWING_STAGES or name in MODEL_STAGES:
            spec = spec.replace_attributes(
                automation_condition=dg.AutomationCondition.eager() if name in automated else None
            )
        if name in FRESHNESS_ASSETS:
            spec = spec.replace_attributes(freshness_policy=policies.get(name))
        return spec

    return apply


def apply_policies(
    assets: Iterable[dg.AssetsDefinition], env: Mapping[str, str] | None = None, gpu: bool | None = None
) -> list[dg.AssetsDefinition]:
    """The assets with their automation conditions and freshness policies as the environment sets them; their check
    specs, partitions, retry policy and pool are kept. Applied to assets that have them, it gives them other
    settings."""
    return list(dg.map_asset_specs(with_policies(env, gpu), assets))


def automation_sensor(
    env: Mapping[str, str] | None = None, run_tags: Mapping[str, str] | None = None
) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates every automation condition, running from the start unless
    MINING_AUTOMATION_SENSOR=stopped. A toggle in the UI is kept by the instance and wins over this default.

    Args:
        env: The environment to read (default: the process's).
        run_tags: Tags of every run it requests (the model jobs' tags, so a run on Kubernetes gets its GPUs).

    Raises:
        ValueError: MINING_AUTOMATION_SENSOR is neither ``running`` nor ``stopped``.
    """
    env = _environment(env)
    setting = (_setting(env, SENSOR_SETTING) or "running").lower()
    statuses = {"running": dg.DefaultSensorStatus.RUNNING, "stopped": dg.DefaultSensorStatus.STOPPED}
    if setting not in statuses:
        raise ValueError(f"{SENSOR_SETTING}={env[SENSOR_SETTING]!r}: expected running or stopped")
    return dg.AutomationConditionSensorDefinition(
        SENSOR_NAME,
        target=dg.AssetSelection.all(),
        default_status=statuses[setting],
        run_tags=run_tags,
        # one run per keyword, tagged with its partition like every other run, so the run queue keeps each
        # keyword's runs apart (a backfill would be one more thing to watch for the same effect)
        emit_backfills=False,
        description="Requests the automated stages of a keyword when their upstream has new or updated data "
        "(MINING_AUTOMATE_MODEL_STAGES chooses the model stages; mongo_export is never requested).",
    )

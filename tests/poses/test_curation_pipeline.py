"""curation_pipeline as a deployment runs it (`dagster job execute`, the job's own multiprocess executor, step
processes forked from a server that imported the code location): the vision and pose branches run side by side
after the frames catalog, each step in a process of its own, and the run ends green with both branches' outputs."""

import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from harness import BIN, ROOT, embedded_home
from PIL import Image, ImageOps


def execute(job: str, env: dict, config: dict | None = None) -> None:
    argv = [str(BIN / "dagster"), "job", "execute", "-m", "mining_assets.definitions", "-j", job,
            "--tags", json.dumps({"dagster/partition": "door"})]  # fmt: skip
    if config is not None:
        path = Path(env["DAGSTER_HOME"]) / f"{job}.json"
        path.write_text(json.dumps(config))
        argv += ["--config", str(path)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def step_spans(instance, run_id: str) -> dict[str, tuple[float, float, int]]:
    """Each step's start, end and process id, from the run's events."""
    spans: dict[str, list] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            spans[event.step_key] = [entry.timestamp, None, event.pid]
        elif event.event_type_value == "STEP_SUCCESS":
            spans[event.step_key][1] = entry.timestamp
    return {step: tuple(span) for step, span in spans.items()}


@pytest.mark.slow
def test_curation_pipeline_runs_its_branches_side_by_side(tmp_path, tiny_models, bundles, person_photo):
    embedded_home("door")
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(4):  # a person, and a few frames of their own for the vision stages
        ImageOps.mirror(person_photo).crop((number * 8, 0, 500, 560)).save(photos / f"p{number}.jpg", quality=90)
        Image.effect_noise((320, 240), 30 + number).convert("RGB").save(photos / f"n{number}.jpg", quality=90)
    env = {**os.environ, "MINING_FILTER_BACKEND": "siglip", "MINING_FILTER_MODEL": tiny_models["siglip"],
           "MINING_EMBEDDER_MODEL": tiny_models["dinov2"], "MINING_DETECTOR_MODEL": tiny_models["grounding-dino"],
           "MINING_MODEL_DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
           "MINING_POSE_MODEL": str(bundles / "pose_landmarker_lite.task"),
           "MINING_HAND_MODEL": str(bundles / "hand_landmarker.task")}  # fmt: skip
    execute("upload_pipeline", env, {"ops": {"media_registry": {"config": {"local_dir": str(photos)}}}})
    execute("curation_pipeline", env)

    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs(dg.RunsFilter(job_name="curation_pipeline"))
        assert run.status == dg.DagsterRunStatus.SUCCESS
        spans = step_spans(instance, run.run_id)
    assert {"filtered_frames", "detections", "coco_annotations", "quality_scores", "poses", "pose_datasets"} <= set(
        spans
    )
    assert len({pid for _, _, pid in spans.values()}) == len(spans)  # a process per step
    # the first step of each branch started before the other branch's first step had ended: side by side
    vision, pose = spans["filtered_frames"], spans["quality_scores"]
    assert vision[0] < pose[1] and pose[0] < vision[1], (vision, pose)

"""Work keyed by content and settings. A stage's output for a frame depends on the frame's content (its sha256)
and on the settings that change the result (the model, its precision, a label set, a threshold); never on the
keyword that asked for it or the device it ran on. Each output row carries its ``work_key``: a re-run, or another
keyword reaching the same frame, reuses any row with the same ``frame_sha256`` and ``work_key`` instead of running
the model again, and changing a setting changes the key, so exactly the work it affects runs again."""

import hashlib
import json
from typing import Any


def work_key(**settings: Any) -> str:
    """A 16-hex digest of the settings (any JSON values; key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_settings(model: Any) -> dict[str, str]:
    """What of a model resource changes its outputs: backend, checkpoint and precision (not the device)."""
    return {"model": model.describe(), "precision": model.precision()}

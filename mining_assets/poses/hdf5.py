"""Pose datasets as HDF5 files, readable with h5py alone (gzip only, no custom filters), and their JSON sidecars.

Schema (``schema_version`` 1). One file per media item (``<media_id>.h5``) and one per keyword (``keyword.h5``).
A media item's datasets, ``n`` = frames with a pose row, in time order for a video (``sequence_index`` order):

| dataset | shape | dtype | meaning |
|---|---|---|---|
| ``frame_ids`` | (n,) | utf-8 string | the frame's id in the warehouse (``frames.frame_id``) |
| ``sequence_index`` | (n,) | int32 | order of the frame in its media item |
| ``timestamps_s`` | (n,) | float64 | seconds into the video; NaN for photos |
| ``image_size`` | (n, 2) | int32 | (width, height) in pixels of the image the landmarks refer to |
| ``pose_found`` | (n,) | bool | whether a body pose was found |
| ``pose_landmarks`` | (n, 33, 4) | float32 | x, y normalised to the image, z, visibility; NaN when no pose |
| ``pose_world_landmarks`` | (n, 33, 3) | float32 | x, y, z in metres, hip-centred; NaN when no pose |
| ``left_hand``, ``right_hand`` | (n, 21, 3) | float32 | x, y normalised, z; NaN when that hand was not found |
| ``hand_scores`` | (n, 2) | float32 | (left, right) handedness scores; NaN when that hand was not found |

Attributes of a media file's root: ``schema_version``, ``file_kind`` (``media``), ``media_id``, ``media_type``
(video, photo), ``source``, ``source_url``, ``license``, ``creator`` (photographer or channel), ``keyword``,
``partition_key``, ``models`` (JSON list of the model versions that made the landmarks), ``created_at`` (ISO 8601,
UTC) and ``frames`` (= n). Text that is not known is the empty string: a source that names no license per item (a
YouTube video) leaves ``license`` empty, its terms are those of the source (see ``source_url``).

The keyword file's root has ``schema_version``, ``file_kind`` (``keyword``), ``keyword``, ``partition_key``,
``models``, ``created_at``, ``frames`` (all items) and ``media_items``; each item is the group
``/media/<media_id>`` with the same datasets and attributes as its own file. (A media id that is not a safe file
name becomes ``media-<16 hex of its sha256>`` in file and group names; the ``media_id`` attribute keeps it exactly.)

The sidecar (``.json`` beside each file) holds ``schema_version``, ``file``, ``sha256`` and ``size_bytes`` of the
HDF5 file, its ``attributes`` (unknown text as null, ``models`` as a list), ``datasets`` (``{path: {shape,
dtype}}``) and, for the keyword file, ``media`` (each item's attributes by group name).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mining_assets.video.probe import file_sha256

SCHEMA_VERSION = 1
POSE_POINTS, HAND_POINTS = 33, 21
FLOAT_DATASETS = ("pose_landmarks", "pose_world_landmarks", "left_hand", "right_hand", "hand_scores")
DATASETS = ("frame_ids", "sequence_index", "timestamps_s", "image_size", "pose_found", *FLOAT_DATASETS)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


@dataclass
class MediaPoses:
    """One media item's pose arrays (see the module docstring) and its file attributes."""

    attributes: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def frames(self) -> int:
        return len(self.arrays["frame_ids"])

    def root_attributes(self) -> dict[str, Any]:
        """The attributes as written: the given ones and the frame count."""
        return {**self.attributes, "frames": self.frames}


@dataclass
class KeywordPoses:
    """The keyword file's root attributes and its media items, in file order."""

    attributes: dict[str, Any]
    items: list[MediaPoses] = field(default_factory=list)

    def root_attributes(self) -> dict[str, Any]:
        """The root attributes as written: the given ones, all items' frames and the item count."""
        frames = sum(item.frames for item in self.items)
        return {**self.attributes, "frames": frames, "media_items": len(self.items)}


def media_name(media_id: str) -> str:
    """File and group name of a media item: its id when that is a safe name, else a hash of it."""
    if _SAFE_NAME.match(media_id) and media_id != "keyword":
        return media_id
    return "media-" + hashlib.sha256(media_id.encode()).hexdigest()[:16]


def _landmarks(value: Sequence[float] | None, points: int, dims: int, frame_id: str, name: str) -> np.ndarray:
    if value is None:
        return np.full((points, dims), np.nan, np.float32)
    flat = np.asarray(value, np.float32)
    if flat.shape != (points * dims,):
        raise ValueError(f"frame {frame_id!r}: {name} has {flat.size} values, expected {points * dims}")
    return flat.reshape(points, dims)


def pose_arrays(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The datasets of one media item from its ``poses`` rows (any order; sorted by ``sequence_index``).

    Raises:
        ValueError: a landmark list of the wrong length, or a found pose without landmarks.
    """
    rows = sorted(rows, key=lambda row: (row["sequence_index"], row["frame_id"]))
    for row in rows:
        if row["pose_found"] and row["pose_landmarks"] is None:
            raise ValueError(f"frame {row['frame_id']!r}: pose_found but no pose_landmarks")

    def stack(name: str, points: int, dims: int) -> np.ndarray:
        parts = [_landmarks(row[name], points, dims, row["frame_id"], name) for row in rows]
        return np.stack(parts) if parts else np.empty((0, points, dims), np.float32)

    def score(row: Mapping[str, Any], side: str) -> float:
        found = row[f"{side}_hand"] is not None and row[f"{side}_hand_score"] is not None
        return float(row[f"{side}_hand_score"]) if found else np.nan  # NaN: no hand (or no score recorded)

    return {
        "frame_ids": np.array([row["frame_id"] for row in rows], dtype=object),
        "sequence_index": np.array([row["sequence_index"] for row in rows], np.int32),
        "timestamps_s": np.array([np.nan if row["timestamp_s"] is None else row["timestamp_s"] for row in rows]),
        "image_size": np.array([(row["image_width"], row["image_height"]) for row in rows], np.int32).reshape(-1, 2),
        "pose_found": np.array([bool(row["pose_found"]) for row in rows], bool),
        "pose_landmarks": stack("pose_landmarks", POSE_POINTS, 4),
        "pose_world_landmarks": stack("pose_world_landmarks", POSE_POINTS, 3),
        "left_hand": stack("left_hand", HAND_POINTS, 3),
        "right_hand": stack("right_hand", HAND_POINTS, 3),
        "hand_scores": np.array([(score(row, "left"), score(row, "right")) for row in rows], np.float32).reshape(-1, 2),
    }


def content_problems(arrays: Mapping[str, np.ndarray], media_type: str) -> list[str]:
    """What is not finite where it must be: landmarks of found poses and hands, and the timestamps of video frames."""
    problems = []
    found = np.asarray(arrays["pose_found"], bool)
    for name in ("pose_landmarks", "pose_world_landmarks"):
        if not np.isfinite(arrays[name][found]).all():
            problems.append(f"{name}: non-finite values in frames with a pose")
    for side, name in enumerate(("left_hand", "right_hand")):
        present = np.isfinite(arrays[name]).all(axis=(1, 2))
        absent = np.isnan(arrays[name]).all(axis=(1, 2))
        if not (present | absent).all() or (np.isfinite(arrays["hand_scores"][:, side]) & ~present).any():
            problems.append(f"{name}: each frame's hand must be all finite or all NaN (then its score is NaN)")
    stamps = arrays["timestamps_s"]
    if media_type == "video" and not (np.isfinite(stamps).all() and (np.diff(stamps) >= 0).all()):
        problems.append("timestamps_s: video frames need finite timestamps in time order")
    if media_type == "photo" and not np.isnan(stamps).all():
        problems.append("timestamps_s: photos have no timestamp (NaN)")
    return problems


def hdf5_attribute(value: Any) -> Any:
    """How an attribute is stored: unknown text as '', lists and mappings as JSON text, the rest as given."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True)
    return value


def _write_group(group, item: MediaPoses) -> None:
    import h5py

    for name in DATASETS:
        data = item.arrays[name]
        if name == "frame_ids":
            group.create_dataset(name, data=[str(v) for v in data], dtype=h5py.string_dtype("utf-8"))
        elif name in FLOAT_DATASETS and len(data):
            group.create_dataset(name, data=data, compression="gzip", compression_opts=4, shuffle=True)
        else:
            group.create_dataset(name, data=data)
    for key, value in item.root_attributes().items():
        group.attrs[key] = hdf5_attribute(value)


def write_media_file(path: str | Path, item: MediaPoses) -> None:
    """Write one media item's pose datasets and attributes as an HDF5 file."""
    import h5py

    with h5py.File(path, "w") as out:
        _write_group(out, item)


def write_keyword_file(path: str | Path, keyword: KeywordPoses) -> None:
    """Write every media item of a keyword into one HDF5 file, one group ``/media/<media_id>`` each."""
    import h5py

    with h5py.File(path, "w") as out:
        media = out.create_group("media")
        for item in keyword.items:
            _write_group(media.create_group(media_name(item.attributes["media_id"])), item)
        for key, value in keyword.root_attributes().items():
            out.attrs[key] = hdf5_attribute(value)


def dataset_shapes(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{"/media/x/pose_landmarks": {"shape": [...], "dtype": "float32"}, ...}`` as read back from a file."""
    import h5py

    shapes: dict[str, dict[str, Any]] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            dtype = "utf-8" if h5py.check_string_dtype(obj.dtype) else str(obj.dtype)
            shapes["/" + name] = {"shape": list(obj.shape), "dtype": dtype}

    with h5py.File(path, "r") as src:
        src.visititems(visit)
    return shapes


def sidecar(path: str | Path, content: MediaPoses | KeywordPoses) -> dict[str, Any]:
    """The JSON sidecar of a written file: its attributes, dataset shapes, sha256 and size."""
    path = Path(path)
    document = {
        "schema_version": SCHEMA_VERSION,
        "file": path.name,
        "sha256": file_sha256(path),
        "size_bytes": path.stat().st_size,
        "attributes": content.root_attributes(),
        "datasets": dataset_shapes(path),
    }
    if isinstance(content, KeywordPoses):
        document["media"] = {media_name(i.attributes["media_id"]): i.root_attributes() for i in content.items}
    return document


def _attribute_problems(where: str, attrs: Any, expected: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, value in expected.items():
        stored = attrs.get(key)
        if stored is None or stored != hdf5_attribute(value):
            problems.append(f"{where}: attribute {key} is {stored!r}, expected {hdf5_attribute(value)!r}")
    return problems


def _group_problems(where: str, group: Any, item: MediaPoses) -> list[str]:
    problems = _attribute_problems(where, group.attrs, item.root_attributes())
    if set(group.keys()) != set(DATASETS):
        return [*problems, f"{where}: datasets {sorted(group.keys())}, expected {sorted(DATASETS)}"]
    read = {}
    for name in DATASETS:
        data, expected = group[name], item.arrays[name]
        if data.shape != expected.shape:
            problems.append(f"{where}/{name}: shape {data.shape}, expected {expected.shape}")
            continue
        read[name] = data.asstr()[()] if name == "frame_ids" else data[()]
        if name == "frame_ids":
            equal = list(read[name]) == [str(v) for v in expected]
        else:
            equal = read[name].dtype == expected.dtype and np.array_equal(
                read[name], expected, equal_nan=read[name].dtype.kind == "f"
            )
        if not equal:
            problems.append(f"{where}/{name}: values differ from what was written")
    if len(read) == len(DATASETS):
        problems += [f"{where}: {p}" for p in content_problems(read, str(item.attributes.get("media_type")))]
    return problems


def verify(path: str | Path, expected: MediaPoses | KeywordPoses) -> list[str]:
    """Re-open a file with h5py alone and compare it with what was written; returns the problems (none: valid).

    Checks every attribute, the set of datasets, their shapes, dtypes and values (NaN where NaN was written),
    the frame counts, and that landmarks and timestamps are finite where they must be.
    """
    import h5py

    try:
        with h5py.File(path, "r") as src:
            if isinstance(expected, MediaPoses):
                return _group_problems("/", src, expected)
            problems = _attribute_problems("/", src.attrs, expected.root_attributes())
            names = {media_name(item.attributes["media_id"]): item for item in expected.items}
            stored = set(src["media"].keys()) if "media" in src else set()
            if stored != set(names):
                problems.append(f"/media: groups {sorted(stored)}, expected {sorted(names)}")
            for name in sorted(stored & set(names)):
                problems += _group_problems(f"/media/{name}", src["media"][name], names[name])
            return problems
    except OSError as error:
        return [f"cannot open as HDF5: {error}"]

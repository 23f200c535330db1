"""What every model resource shares: device choice, precision, offline loading with clear errors, and a
per-process cache so weights load once (on first use, never at import)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg

_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


class ModelUnavailableError(RuntimeError):
    """The weights of a model can't be loaded here; the message names the model and how to fetch it."""


def pick_device(preference: str = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; anything else is used as given (``cuda:1``, ``cpu``)."""
    if preference != "auto":
        return preference
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def hub_offline() -> bool:
    """Hugging Face's own switch for offline work, honoured as well as the resource's ``offline`` field."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_pretrained(
    loader: Callable[..., Any], source: str, *, role: str, offline: bool, setting: str = "model_id", **kwargs: Any
) -> Any:
    """Call a ``from_pretrained`` loader; turn "weights not found" into an error that says how to fetch them."""
    is_dir = Path(source).expanduser().is_dir()
    if source.startswith(("/", "./", "../", "~")) and not is_dir:
        raise ModelUnavailableError(f"{role}: no model directory at {source!r}")
    try:
        return loader(str(Path(source).expanduser()) if is_dir else source, local_files_only=offline, **kwargs)
    except (OSError, ValueError) as error:
        if is_dir:
            raise ModelUnavailableError(f"{role}: the directory {source!r} holds no loadable model: {error}") from error
        how = (
            f"fetch it once with `hf download {source}` (or `huggingface-cli download {source}`) on a machine "
            f"with network access, or set {setting} to a local directory holding it"
        )
        mode = "offline mode is on and it is not in the local cache" if offline else "it could not be downloaded"
        raise ModelUnavailableError(
            f"{role}: weights for {source!r} are not available ({mode}); {how}. Loader said: {error}"
        ) from error


def cached(key: tuple, factory: Callable[[], Any]) -> Any:
    """The object built by ``factory`` for ``key``, built once per process (threads wait for the first build)."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = factory()
        return _CACHE[key]


class ModelResource(dg.ConfigurableResource):
    """Configuration shared by model roles. Subclasses name their backends and default checkpoints."""

    backend: str
    model_id: str | None = None  # a Hugging Face model id or a local directory; None: the backend's default
    device: str = "auto"  # auto: cuda, then mps, then cpu
    half_precision: bool = True  # float16 on cuda (never on cpu)
    batch_size: int = 8
    offline: bool = False  # also on when HF_HUB_OFFLINE is set
    cache_dir: str | None = None

    role: ClassVar[str] = "model"
    setting: ClassVar[str] = "model_id"  # the environment variable that chooses the checkpoint
    default_models: ClassVar[dict[str, str]] = {}

    def resolved_model_id(self) -> str:
        if self.model_id:
            return self.model_id
        if self.backend not in self.default_models:
            raise ValueError(
                f"{self.role}: unknown backend {self.backend!r}; choose one of {sorted(self.default_models)}"
            )
        return self.default_models[self.backend]

    def resolved_device(self) -> str:
        return pick_device(self.device)

    def dtype(self):
        import torch

        return torch.float16 if self.half_precision and self.resolved_device().startswith("cuda") else torch.float32

    def precision(self) -> str:
        """``float16`` or ``float32``: part of every output's work key (``mining_assets.work``); the device is not."""
        return str(self.dtype()).removeprefix("torch.")

    def is_offline(self) -> bool:
        return self.offline or hub_offline()

    def describe(self) -> str:
        """``backend:model_id`` as recorded beside every output of the model."""
        return f"{self.backend}:{self.resolved_model_id()}"

    def _load(self, loader: Callable[..., Any], source: str | None = None, **kwargs: Any) -> Any:
        kwargs = {"cache_dir": self.cache_dir, **kwargs} if self.cache_dir else kwargs
        return load_pretrained(
            loader,
            source or self.resolved_model_id(),
            role=self.role,
            offline=self.is_offline(),
            setting=f"{self.setting} (or the resource's model_id)",
            **kwargs,
        )

    def _place(self, model: Any) -> Any:
        """Move a loaded model to the device, in half precision on cuda, in eval mode."""
        return model.to(device=self.resolved_device(), dtype=self.dtype()).eval()

    def cache_key(self, kind: str, model_id: str | None = None) -> tuple:
        """Weights are shared by every resource that loads the same model the same way in this process."""
        model_id = model_id or self.resolved_model_id()
        return (kind, model_id, self.resolved_device(), str(self.dtype()), self.cache_dir)


def to_device(inputs: dict[str, Any], device: str, dtype: Any) -> dict[str, Any]:
    """Move processor outputs to the model's device; floating tensors take the model's precision."""
    moved = {}
    for name, value in inputs.items():
        if hasattr(value, "to"):
            value = value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
        moved[name] = value
    return moved

"""Feeding a model without starving it: frames are fetched, decoded and preprocessed on worker threads, a few
batches ahead, while the model runs on the current batch."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mining_assets.vision.images import ImageError
from resources.faults import InfrastructureError

if TYPE_CHECKING:
    from PIL import Image

T = TypeVar("T")


@dataclass
class Batch(Generic[T]):
    """Items whose images loaded, those images, their model inputs, and the items that failed with a reason."""

    items: list[T] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    inputs: Any = None
    failed: list[tuple[T, str]] = field(default_factory=list)


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _build(chunk: list[T], load: Callable[[T], Image.Image], prepare: Callable[[list], Any]) -> Batch[T]:
    batch: Batch[T] = Batch()
    for item in chunk:
        try:
            image = load(item)
        except ImageError as error:
            batch.failed.append((item, str(error)))
            continue
        except InfrastructureError:  # the store failed, not the frame: the step fails (and is retried)
            raise
        except Exception as error:  # a missing or unreadable file loses this frame only; the reason is kept
            batch.failed.append((item, f"could not read the frame: {type(error).__name__}: {error}"))
            continue
        batch.items.append(item)
        batch.images.append(image)
    if batch.images:
        batch.inputs = prepare(batch.images)
    return batch


def prepared_batches(
    items: Iterable[T],
    load: Callable[[T], Image.Image],
    prepare: Callable[[list], Any],
    batch_size: int,
    workers: int = 2,
    ahead: int = 2,
) -> Iterator[Batch[T]]:
    """Batches in input order; up to ``workers + ahead`` batches are loaded and prepared while one is consumed."""
    in_flight: deque[Future[Batch[T]]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="prepare") as pool:
        try:
            for chunk in _chunks(items, max(1, batch_size)):
                in_flight.append(pool.submit(_build, chunk, load, prepare))
                if len(in_flight) > workers + ahead - 1:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            for future in in_flight:
                future.cancel()

"""Near-duplicate removal over L2-normalised embeddings: greedy leader selection in a fixed priority order.

Pairs with cosine >= threshold are found by blocked float32 matrix products, either over the whole upper triangle
("exact") or inside an inverted-file index ("ivf": spherical k-means cells, each vector searched against the
members of its ``nprobe`` nearest cells). Every candidate's cosine is then recomputed in float64, so both methods
report the same similarity for a pair and differ only in the pairs the index misses. The pairs are held in memory:
data where most rows are near-duplicates of most others (O(n^2) pairs) is outside what this is built for.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np

Method = Literal["auto", "exact", "ivf"]
CANDIDATE_MARGIN = 1e-3  # float32 products are screened at threshold - margin, far wider than their rounding error
TOLERANCE = 1e-9  # verified float64 cosines this far below the threshold still count (identical vectors at 1.0)
CELLS_PER_ROOT = 1.0  # k-means cells: round(CELLS_PER_ROOT * sqrt(n))
KMEANS_ITERATIONS = 8
KMEANS_SAMPLE = (32, 16_384)  # k-means trains on 32 rows per cell, at most 16,384
_CHUNK = 8192  # rows per chunk when validating and normalising, pairs per chunk when verifying


@dataclass(frozen=True)
class DedupResult:
    """Outcome of :func:`deduplicate`, aligned with the input rows.

    Attributes:
        keep: bool (n,), True for the representative of each group.
        representative: int64 (n,), index of the kept item each item is a duplicate of (itself when kept).
        similarity: float32 (n,), cosine similarity to the representative (1.0 when kept).
        method: "exact" or "ivf", the pair search that was used.
    """

    keep: np.ndarray
    representative: np.ndarray
    similarity: np.ndarray
    method: str


def deduplicate(
    vectors: np.ndarray,
    scores: np.ndarray | None = None,
    ids: Sequence[str] | None = None,
    threshold: float = 0.90,
    method: Method = "auto",
    exact_limit: int = 20_000,
    block: int = 4096,
    seed: int = 0,
    nprobe: int = 10,
) -> DedupResult:
    """Keep one item per group of near-duplicates, visiting items by priority.

    Items are visited by highest ``scores`` first, ties broken by ``ids`` ascending, then by index. An item is
    kept unless its cosine with an already kept item is >= ``threshold``; a removed item points at the kept item
    of higher priority it is most similar to. This is leader selection, not connected components: in a chain
    a~b~c with a !~ c, both a and c are kept. The result depends on the input order only through scores and ids.

    Args:
        vectors: (n, d) finite float array; rows are re-normalised here.
        scores: (n,) priority, higher first; None for all equal.
        ids: n strings breaking ties between equal scores; None to break them by index.
        threshold: cosine at which two items are duplicates, in (0, 1].
        method: "exact" (all pairs), "ivf" (approximate index), or "auto" (exact up to ``exact_limit`` rows).
        exact_limit: the largest n searched exactly under "auto".
        block: rows per matrix product.
        seed: seeds the k-means sample and initial centroids of "ivf".
        nprobe: cells each vector is searched in under "ivf".

    Returns:
        A DedupResult aligned with the input rows.

    Raises:
        ValueError: on a bad shape or dtype, a non-finite value, a zero vector, a threshold outside (0, 1], an
            unknown method, or scores/ids that do not match the vectors.
    """
    array, chosen = _validated(vectors, threshold, method, exact_limit)
    n = len(array)
    order = _priority_order(n, scores, ids)
    # work in priority ranks (row r of `unit` is the r-th item visited), so that the pairs, the k-means sample and
    # every product are the same whatever the input order
    i, j, sim = _pairs(_normalised(array, order), threshold, chosen, block, nprobe, seed)
    keep, representative, similarity = _leaders(n, i, j, sim)
    result = DedupResult(np.empty(n, bool), np.empty(n, np.int64), np.empty(n, np.float32), chosen)
    result.keep[order], result.representative[order], result.similarity[order] = keep, order[representative], similarity
    return result


def similar_pairs(
    vectors: np.ndarray,
    threshold: float,
    method: Method = "auto",
    exact_limit: int = 20_000,
    block: int = 4096,
    seed: int = 0,
    nprobe: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of rows with cosine >= ``threshold`` (under "ivf": those the index finds); arguments as deduplicate.

    Returns:
        int64 ``i``, int64 ``j`` with i < j, and their float32 cosine, sorted by (i, j).
    """
    array, chosen = _validated(vectors, threshold, method, exact_limit)
    i, j, sim = _pairs(_normalised(array, np.arange(len(array))), threshold, chosen, block, nprobe, seed)
    return i, j, sim.astype(np.float32)


def _validated(vectors: np.ndarray, threshold: float, method: str, exact_limit: int) -> tuple[np.ndarray, str]:
    """The vectors as an array, and the method to use ("exact" or "ivf"); raises ValueError on bad input."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (n, d), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"vectors must be a float array, got dtype {array.dtype}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not all(np.isfinite(array[start : start + _CHUNK]).all() for start in range(0, len(array), _CHUNK)):
        raise ValueError("vectors contain NaN or infinite values")
    if method not in ("auto", "exact", "ivf"):
        raise ValueError(f"method must be 'auto', 'exact' or 'ivf', got {method!r}")
    return array, method if method != "auto" else ("exact" if len(array) <= exact_limit else "ivf")


def _priority_order(n: int, scores: np.ndarray | None, ids: Sequence[str] | None) -> np.ndarray:
    """Row indices by priority: highest score, then lowest id, then lowest index."""
    keys = [np.arange(n)]
    if ids is not None:
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} vectors")
        keys.append(np.unique(np.asarray(ids, dtype=str), return_inverse=True)[1].reshape(n))
    if scores is not None:
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(values) != n or not np.isfinite(values).all():
            raise ValueError(f"scores must be {n} finite numbers, got {len(values)} values")
        keys.append(-values)
    return np.lexsort(keys).astype(np.int64)


def _normalised(array: np.ndarray, order: np.ndarray) -> np.ndarray:
    """float32 unit rows of ``array[order]``; norms and division in float64."""
    unit = np.empty(array.shape, np.float32)
    for start in range(0, len(order), _CHUNK):
        rows = array[order[start : start + _CHUNK]]
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64, casting="unsafe"))
        if not norms.all():
            zero = order[start + np.flatnonzero(norms == 0)]
            raise ValueError(f"zero vectors have no direction and cannot be normalised (rows {zero[:10].tolist()})")
        np.divide(rows, norms[:, None], out=unit[start : start + len(rows)], casting="unsafe")
    return unit


def _pairs(
    unit: np.ndarray, threshold: float, method: str, block: int, nprobe: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified pairs: int64 i < j, float64 cosine >= threshold - TOLERANCE, sorted by (i, j)."""
    if block < 1 or nprobe < 1:
        raise ValueError(f"block and nprobe must be at least 1, got {block} and {nprobe}")
    n = len(unit)
    find = _exact_candidates if method == "exact" else _ivf_candidates
    found = [i * np.int64(n) + j for i, j in find(unit, np.float32(threshold - CANDIDATE_MARGIN), block, nprobe, seed)]
    keys = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    i, j, sim = keys // max(n, 1), keys % max(n, 1), np.empty(len(keys))
    for start in range(0, len(keys), _CHUNK):  # the cosine of the float32 unit rows, in float64
        a, b = (unit[side[start : start + _CHUNK]].astype(np.float64) for side in (i, j))
        dots, squares = np.einsum("ij,ij->i", a, b), np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b)
        sim[start : start + _CHUNK] = dots / np.sqrt(squares)
    found = sim >= threshold - TOLERANCE
    return i[found], j[found], np.minimum(sim[found], 1.0)


def _exact_candidates(unit: np.ndarray, screen: np.float32, block: int, *_: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Yields (i, j), i < j, from the upper-triangle tiles of unit @ unit.T, ``block`` x ``block`` at a time."""
    n, buffer = len(unit), np.empty(min(len(unit), block) ** 2, np.float32)
    for row in range(0, n, block):
        for col in range(row, n, block):
            a, b = _hits(unit[row : row + block], unit[col : col + block].T, screen, buffer)
            a, b = a + row, b + col
            yield a[a < b], b[a < b]


def _ivf_candidates(
    unit: np.ndarray, screen: np.float32, block: int, nprobe: int, seed: int
) -> Iterator[tuple[np.ndarray, ...]]:
    """Yields (i, j), i < j, where j lies in one of i's ``nprobe`` nearest cells or i in one of j's."""
    n = len(unit)
    if n < 2:
        return
    cells = max(1, min(n, round(CELLS_PER_ROOT * math.sqrt(n))))
    probes = _nearest_cells(unit, _spherical_kmeans(unit, cells, seed), min(nprobe, cells), block)
    members, member_starts = _grouped(probes[:, 0], cells)  # column 0, the nearest cell, is where a vector lives
    queries, query_starts = _grouped(probes.ravel(), cells)
    queries //= probes.shape[1]
    buffer = np.empty(min(block, n) * int(np.diff(member_starts).max()), np.float32)
    for cell in range(cells):
        inside = members[member_starts[cell] : member_starts[cell + 1]]
        if not len(inside):  # nearest to no vector, though some may list it among their nprobe
            continue
        cell_vectors = unit[inside].T
        asking = queries[query_starts[cell] : query_starts[cell + 1]]
        for start in range(0, len(asking), block):
            chunk = asking[start : start + block]
            a, b = _hits(unit[chunk], cell_vectors, screen, buffer)
            a, b = chunk[a], inside[b]
            yield np.minimum(a, b)[a != b], np.maximum(a, b)[a != b]


def _hits(left: np.ndarray, right: np.ndarray, screen: np.float32, buffer: np.ndarray) -> tuple[np.ndarray, ...]:
    """Row and column of each entry of left @ right that is >= screen.

    The product goes to the front of a reused buffer (no fresh pages for every tile); only the rows whose maximum
    passes are scanned, and few do.
    """
    sims = np.matmul(left, right, out=buffer[: len(left) * right.shape[1]].reshape(len(left), right.shape[1]))
    rows = np.flatnonzero(sims.max(axis=1) >= screen)
    a, b = np.nonzero(sims[rows] >= screen)
    return rows[a], b


def _spherical_kmeans(unit: np.ndarray, cells: int, seed: int) -> np.ndarray:
    """Unit centroids after a few Lloyd iterations on a sample, cosine assignment; empty cells are re-seeded."""
    rng = np.random.default_rng(seed)
    size = max(cells, min(len(unit), cells * KMEANS_SAMPLE[0], KMEANS_SAMPLE[1]))
    sample = unit[np.sort(rng.choice(len(unit), size=size, replace=False))]
    centroids = sample[rng.choice(size, size=cells, replace=False)]
    for _ in range(KMEANS_ITERATIONS):
        members, starts = _grouped(np.argmax(sample @ centroids.T, axis=1), cells)
        grouped = sample[members]  # per-cell sums of contiguous runs beat np.add.at and a one-hot product
        sums = np.stack([grouped[start:end].sum(axis=0) for start, end in pairwise(starts)])
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        empty = np.flatnonzero(starts[:-1] == starts[1:])
        centroids[empty] = sample[rng.choice(size, size=len(empty), replace=False)]
    return centroids


def _nearest_cells(unit: np.ndarray, centroids: np.ndarray, nprobe: int, block: int) -> np.ndarray:
    """(n, nprobe) int64 cells by decreasing cosine to each vector."""
    probes = np.empty((len(unit), nprobe), np.int64)
    for start in range(0, len(unit), block):
        sims = unit[start : start + block] @ centroids.T
        rows = np.arange(len(sims))
        for rank in range(nprobe):  # nprobe passes of argmax beat argpartition for ~10 of some hundred cells
            best = np.argmax(sims, axis=1)
            probes[start + rows, rank] = best
            sims[rows, best] = -np.inf
    return probes


def _grouped(labels: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted by label, and where each label's run starts (CSR offsets, length groups + 1)."""
    starts = np.zeros(groups + 1, np.int64)
    np.cumsum(np.bincount(labels, minlength=groups), out=starts[1:])
    return np.argsort(labels, kind="stable").astype(np.int64), starts


def _leaders(n: int, i: np.ndarray, j: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy leaders in rank order, O(n + pairs): j goes to its most similar kept i (i < j, visited earlier)."""
    keep = [True] * n
    representative, similarity = np.arange(n, dtype=np.int64), np.ones(n, np.float32)
    order = np.lexsort((i, -sim, j))  # CSR by j; each j's partners most similar first, then by priority
    i, j, sim = i[order], j[order], sim[order]
    starts = np.flatnonzero(np.diff(j, prepend=-1)).tolist()
    partners, lowers = i.tolist(), j.tolist()
    for start, end in pairwise([*starts, len(partners)]):
        for position in range(start, end):  # every partner i < j is final: it was visited before j
            if keep[partners[position]]:
                lower = lowers[start]
                keep[lower], representative[lower], similarity[lower] = False, partners[position], sim[position]
                break
    return np.array(keep, dtype=bool), representative, similarity

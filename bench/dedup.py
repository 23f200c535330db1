"""Benchmark near-duplicate removal (mining_assets.vision.dedup.deduplicate): speed against two baselines, recall.

Data: ``--n`` random unit vectors of ``--dim`` float32, of which ``--dup-fraction`` are planted near-duplicates,
each of one of n * dup_fraction / 2 base vectors (groups average three rows), at a cosine to its base drawn
uniformly from [threshold - 0.1, 0.995]: a spread across the threshold. The first ``--naive-n`` rows, and the
first ``--exact-n``, are sets of their own made the same way (so subsets keep the density of duplicates); rows are
shuffled within each set; scores are rounded to two decimals so that ties happen, broken by the random ids.

Speed: each of ``--repeats`` rounds runs back to back, in alternating order, the fast path (deduplicate on all n
rows, method "auto": ivf above 20,000 rows), the exact blocked method on the first ``--exact-n`` rows and a naive
pure-Python loop (each item against each kept item, one numpy dot per pair) on the first ``--naive-n`` rows. Both
baselines do O(n^2) work and are extrapolated quadratically to n; a speed-up is the median over rounds of the
round's extrapolated baseline time / the same round's fast time, because the machine is noisy. The exact
extrapolation overstates somewhat: its diagonal tiles compute whole squares, a larger share of the work on the
subset than on all n rows (``--full-exact`` measures it, once).

Recall: on the ``--exact-n`` subset, the pairs with cosine >= threshold that ivf finds / those exact finds, and
whether the kept sets agree; at full n, for ``--recall-queries`` random rows, their exact pairs with all n rows
against the pairs ivf finds over all n rows (``--full-exact`` runs the exact method on all n rows instead).

Run from the repository root:

    .venv/bin/python bench/dedup.py [--n 100000] [--dim 768] [--dup-fraction 0.2] [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mining_assets.vision import dedup  # noqa: E402

SPREAD = 0.1  # planted cosines start this far below the threshold
TOP_COSINE = 0.995


def planted(sizes: list[int], dim: int, dup_fraction: float, threshold: float, seed: int):
    """Unit vectors with planted near-duplicate groups, and random scores (with ties) and ids.

    The rows are consecutive independent sets of ``sizes``, each shuffled, so that the first rows are a subset with
    the same density of duplicates as the whole. Returns the vectors, scores, ids and the number of base vectors.
    """
    rng = np.random.default_rng(seed)
    parts, bases_total = [], 0
    for size in sizes:
        vectors = rng.standard_normal((size, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        duplicates = int(size * dup_fraction)
        groups = max(1, duplicates // 2)
        bases = vectors[rng.integers(0, groups, duplicates)]
        noise = vectors[size - duplicates :]  # independent random directions, made orthogonal to their base
        noise -= np.einsum("ij,ij->i", noise, bases)[:, None] * bases
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        cosine = rng.uniform(threshold - SPREAD, TOP_COSINE, duplicates).astype(np.float32)[:, None]
        vectors[size - duplicates :] = cosine * bases + np.sqrt(1 - cosine**2) * noise
        parts.append(vectors[rng.permutation(size)])
        bases_total += groups
    n = sum(sizes)
    scores = np.round(rng.random(n), 2)
    ids = [f"frame-{value:07d}" for value in rng.permutation(n)]
    return np.concatenate(parts), scores, ids, bases_total


def naive_keep(vectors: np.ndarray, scores: np.ndarray, ids: list[str], threshold: float) -> np.ndarray:
    """The obvious loop: visit by priority, compare with every kept item, one numpy dot per pair."""
    unit = [row / np.linalg.norm(row) for row in vectors]
    kept: list[int] = []
    for item in sorted(range(len(unit)), key=lambda k: (-scores[k], ids[k], k)):
        row = unit[item]
        if not any(float(np.dot(row, unit[other])) >= threshold for other in kept):
            kept.append(item)
    keep = np.zeros(len(unit), bool)
    keep[kept] = True
    return keep


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def pair_keys(pairs, n: int) -> np.ndarray:
    i, j, _ = pairs
    return i * np.int64(n) + j


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="rows (default 100,000)")
    parser.add_argument("--dim", type=int, default=768, help="dimensions (default 768)")
    parser.add_argument("--dup-fraction", type=float, default=0.2, help="planted duplicate rows (default 0.2)")
    parser.add_argument("--threshold", type=float, default=0.9, help="cosine threshold (default 0.9)")
    parser.add_argument("--nprobe", type=int, default=10, help="cells each vector searches under ivf (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="paired rounds (default 3)")
    parser.add_argument("--exact-n", type=int, default=20_000, help="rows for the exact baseline (default 20,000)")
    parser.add_argument("--naive-n", type=int, default=2_000, help="rows for the naive baseline (default 2,000)")
    parser.add_argument("--recall-queries", type=int, default=2_000, help="rows whose pairs are checked at full n")
    parser.add_argument("--full-exact", action="store_true", help="also run exact on all n rows (about a minute)")
    parser.add_argument("--goal-s", type=float, default=10.0, help="goal for the fast path (default 10 s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.n < 2 or not 0 <= args.dup_fraction < 1:
        parser.error("need --repeats >= 1, --n >= 2 and 0 <= --dup-fraction < 1")
    n, threshold = args.n, args.threshold
    exact_n = min(args.exact_n, n)
    naive_n = min(args.naive_n, exact_n)
    fast_method = "exact" if n <= 20_000 else "ivf"
    cells = max(1, min(n, round(dedup.CELLS_PER_ROOT * math.sqrt(n))))
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.2f}; repeats={args.repeats}",
        flush=True,
    )

    sizes = [size for size in (naive_n, exact_n - naive_n, n - exact_n) if size]
    (vectors, scores, ids, groups), seconds = timed(planted, sizes, args.dim, args.dup_fraction, threshold, args.seed)
    print(
        f"data: {n:,} x {args.dim} float32, {int(n * args.dup_fraction):,} planted duplicates of {groups:,} bases,"
        f" cosine U[{threshold - SPREAD:.3f}, {TOP_COSINE}], threshold {threshold} (made in {seconds:.1f} s)",
        flush=True,
    )
    subset = (vectors[:exact_n], scores[:exact_n], ids[:exact_n])
    small = (vectors[:naive_n], scores[:naive_n], ids[:naive_n])

    def fast():
        return deduplicate_timed(vectors, scores, ids, threshold, "auto", args.nprobe)

    def exact():
        return deduplicate_timed(*subset, threshold, "exact", args.nprobe)

    def naive():
        return timed(naive_keep, *small, threshold)

    runs: dict[str, list[float]] = {"fast": [], "exact": [], "naive": []}
    results = {}
    print("rounds (seconds):", flush=True)
    for repeat in range(args.repeats):
        order = [("fast", fast), ("exact", exact), ("naive", naive)]
        for name, runner in order[::-1] if repeat % 2 else order:
            results[name], seconds = runner()
            runs[name].append(seconds)
        print("  " + "  ".join(f"{name} {runs[name][-1]:.2f}" for name in runs), flush=True)

    fast_result, exact_result, naive_result = results["fast"], results["exact"], results["naive"]
    scale_exact, scale_naive = (n / exact_n) ** 2, (n / naive_n) ** 2
    ratio_exact = statistics.median(e * scale_exact / f for e, f in zip(runs["exact"], runs["fast"], strict=True))
    ratio_naive = statistics.median(v * scale_naive / f for v, f in zip(runs["naive"], runs["fast"], strict=True))
    naive_check = dedup.deduplicate(*small, threshold, "exact")
    naive_agree = (naive_check.keep == naive_result).all()

    # recall on the subset: ivf against exact, pairs and kept sets
    subset_ivf = dedup.deduplicate(*subset, threshold, "ivf", nprobe=args.nprobe)
    exact_pairs = pair_keys(dedup.similar_pairs(subset[0], threshold, "exact"), exact_n)
    ivf_pairs = pair_keys(dedup.similar_pairs(subset[0], threshold, "ivf", nprobe=args.nprobe), exact_n)
    subset_recall = np.isin(exact_pairs, ivf_pairs).mean() if len(exact_pairs) else float("nan")
    subset_extra = (~np.isin(ivf_pairs, exact_pairs)).sum()
    subset_agree = (subset_ivf.keep == exact_result.keep).all()
    subset_kept_diff = int((subset_ivf.keep != exact_result.keep).sum())

    # recall at full n
    full_pairs = dedup.similar_pairs(vectors, threshold, fast_method, nprobe=args.nprobe)
    found = pair_keys(full_pairs, n)
    full_exact_s = None
    if args.full_exact:
        truth, full_exact_s = timed(dedup.similar_pairs, vectors, threshold, "exact")
        true_keys = pair_keys(truth, n)
        full_label = f"all {n:,} rows, exact in {full_exact_s:.1f} s, measured, not extrapolated"
    else:
        queries = np.sort(np.random.default_rng(args.seed + 1).choice(n, min(args.recall_queries, n), replace=False))
        true_keys = sampled_truth(vectors, queries, threshold)
        full_label = f"the pairs of {len(queries):,} random rows with all {n:,}, found by a direct product"
    full_recall = np.isin(true_keys, found).mean() if len(true_keys) else float("nan")

    fast_median = statistics.median(runs["fast"])
    exact_median, naive_median = statistics.median(runs["exact"]), statistics.median(runs["naive"])
    print()
    print(f"speed (seconds: median and best of {args.repeats} paired rounds; load average {os.getloadavg()[0]:.2f})")
    print(f"  {'path':<44} {'rows':>8} {'median s':>9} {'best s':>8} {'at n s':>10}  kept")
    print(
        f"  {f'deduplicate auto -> {fast_result.method} ({cells} cells, nprobe {args.nprobe})':<44} {n:>8,}"
        f" {fast_median:>9.2f} {min(runs['fast']):>8.2f} {fast_median:>10.2f}  {fast_result.keep.sum():,}"
    )
    print(
        f"  {'exact blocked matrix products':<44} {exact_n:>8,} {exact_median:>9.2f} {min(runs['exact']):>8.2f}"
        f" {exact_median * scale_exact:>10.1f}  {exact_result.keep.sum():,} (at n: extrapolated x{scale_exact:g})"
    )
    print(
        f"  {'naive pure-Python loop, numpy dot per pair':<44} {naive_n:>8,} {naive_median:>9.2f}"
        f" {min(runs['naive']):>8.2f} {naive_median * scale_naive:>10.0f}  {naive_result.sum():,}"
        f" (at n: extrapolated x{scale_naive:g}; kept set {'equals' if naive_agree else 'DIFFERS from'} exact's)"
    )
    print(
        f"speed-up of the fast path (median of paired rounds): {ratio_exact:.1f}x over exact (extrapolated),"
        f" {ratio_naive:,.0f}x over naive (extrapolated)"
        + (f"; {full_exact_s / fast_median:.1f}x over exact pair search run once on all n" if full_exact_s else "")
    )
    print(f"recall of ivf (nprobe {args.nprobe}) against exact:")
    print(
        f"  subset {exact_n:,} rows: {np.isin(exact_pairs, ivf_pairs).sum():,} of {len(exact_pairs):,} pairs"
        f" >= {threshold} found, recall {subset_recall:.4f}, {subset_extra} not in exact;"
        f" kept sets {'agree' if subset_agree else f'DIFFER in {subset_kept_diff} row(s)'}"
        f" ({subset_ivf.keep.sum():,} kept)"
    )
    print(
        f"  full {n:,} rows ({fast_method}): {np.isin(true_keys, found).sum():,} of {len(true_keys):,} pairs"
        f" found, recall {full_recall:.4f} (truth: {full_label})"
    )
    verdict = "ok" if fast_median <= args.goal_s else "ABOVE GOAL"
    print(
        f"{n:,} x {args.dim} in {fast_median:.2f} s, median of {args.repeats}"
        f" (goal: a few seconds, <= {args.goal_s:g} s) {verdict}"
    )


def deduplicate_timed(vectors, scores, ids, threshold, method, nprobe):
    return timed(dedup.deduplicate, vectors, scores, ids, threshold, method, nprobe=nprobe)


def sampled_truth(vectors: np.ndarray, queries: np.ndarray, threshold: float) -> np.ndarray:
    """Pair keys (i < j) of every pair with cosine >= threshold that involves a query row, by a direct product."""
    n = len(vectors)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = []
    for start in range(0, len(queries), 512):
        rows = queries[start : start + 512]
        candidate_rows, columns = np.nonzero(unit[rows] @ unit.T >= threshold - dedup.CANDIDATE_MARGIN)
        a, b = rows[candidate_rows], columns
        cosine = np.einsum("ij,ij->i", unit[a].astype(np.float64), unit[b].astype(np.float64))
        norms = np.linalg.norm(unit[a].astype(np.float64), axis=1) * np.linalg.norm(unit[b].astype(np.float64), axis=1)
        keep = (a != b) & (cosine / norms >= threshold - dedup.TOLERANCE)
        keys.append(np.minimum(a, b)[keep] * np.int64(n) + np.maximum(a, b)[keep])
    return np.unique(np.concatenate(keys)) if keys else np.empty(0, np.int64)


if __name__ == "__main__":
    main()

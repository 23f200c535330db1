import numpy as np
import pytest

from mining_assets.vision.dedup import DedupResult, deduplicate, similar_pairs


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def near(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly ``cosine`` from the unit vector ``base``."""
    noise = rng.standard_normal(base.shape)
    noise -= noise @ base * base
    return cosine * base + np.sqrt(1 - cosine**2) * noise / np.linalg.norm(noise)


def planted(n_base: int, dim: int, seed: int, low: float = 0.95, high: float = 0.99):
    """Random unit vectors, then 1-3 near-duplicates of every other one (cosine in [low, high]), shuffled.

    Returns the vectors and each row's group (the index of its base vector before shuffling).
    """
    rng = np.random.default_rng(seed)
    bases = unit_rows(rng, n_base, dim)
    rows, groups = list(bases), list(range(n_base))
    for group in range(0, n_base, 2):
        for _ in range(rng.integers(1, 4)):
            rows.append(near(bases[group], rng.uniform(low, high), rng))
            groups.append(group)
    shuffle = rng.permutation(len(rows))
    return np.array(rows, np.float32)[shuffle], np.array(groups)[shuffle]


def test_planted_duplicates_are_found_and_kept_once_per_group():
    vectors, groups = planted(300, 64, seed=1)
    result = deduplicate(vectors)
    assert result.method == "exact"
    assert sorted(groups[result.keep]) == list(range(300))  # one row kept per group, every group kept
    assert (groups[result.representative] == groups).all()
    removed = ~result.keep
    assert (result.similarity[removed] >= 0.9).all() and (result.similarity[result.keep] == 1.0).all()
    assert (result.representative[result.keep] == np.flatnonzero(result.keep)).all()
    assert result.keep.dtype == bool and result.representative.dtype == np.int64
    assert result.similarity.dtype == np.float32


def test_pairs_below_the_threshold_are_not_merged():
    rng = np.random.default_rng(2)
    bases = unit_rows(rng, 50, 32)
    vectors = np.vstack([bases, [near(b, 0.88, rng) for b in bases], [near(b, 0.899, rng) for b in bases]])
    assert deduplicate(vectors, threshold=0.9).keep.all()
    assert len(similar_pairs(vectors, 0.9)[0]) == 0
    assert (~deduplicate(vectors, threshold=0.87).keep).sum() >= 50


def test_highest_score_is_the_representative():
    rng = np.random.default_rng(3)
    base = unit_rows(rng, 1, 16)[0]
    vectors = np.array([near(base, 0.97, rng), base, near(base, 0.98, rng)])
    result = deduplicate(vectors, scores=np.array([0.2, 0.5, 0.9]))
    assert result.keep.tolist() == [False, False, True]
    assert result.representative.tolist() == [2, 2, 2]


def test_equal_scores_are_broken_by_id_then_index():
    rng = np.random.default_rng(4)
    base = unit_rows(rng, 1, 16)[0]
    vectors = np.array([base, near(base, 0.95, rng), near(base, 0.96, rng)])
    by_id = deduplicate(vectors, scores=np.ones(3), ids=["frame-c", "frame-a", "frame-b"])
    assert by_id.keep.tolist() == [False, True, False] and by_id.representative.tolist() == [1, 1, 1]
    by_index = deduplicate(vectors)
    assert by_index.keep.tolist() == [True, False, False] and by_index.representative.tolist() == [0, 0, 0]


def test_chain_keeps_both_ends_and_points_to_the_most_similar_leader():
    theta = np.arccos(0.95)
    angles = [0.0, theta, 2 * theta]  # a~b and b~c (0.95), a!~c (cos 2θ = 0.805)
    vectors = np.zeros((3, 8))
    vectors[:, 0], vectors[:, 1] = np.cos(angles), np.sin(angles)
    result = deduplicate(vectors, ids=["a", "b", "c"], scores=np.array([3.0, 2.0, 1.0]))
    assert result.keep.tolist() == [True, False, True]
    assert result.representative.tolist() == [0, 0, 2]
    # d is close to both kept leaders: it goes to c (more similar), not to a (higher priority)
    d = np.zeros(8)
    d[0], d[1] = np.cos(1.7 * theta), np.sin(1.7 * theta)
    result = deduplicate(np.vstack([vectors, d]), scores=np.array([3.0, 2.0, 1.0, 0.0]))
    assert result.keep.tolist() == [True, False, True, False]
    assert result.representative.tolist() == [0, 0, 2, 2]
    assert result.similarity[3] == pytest.approx(np.cos(0.3 * theta), abs=1e-6)


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_result_does_not_depend_on_input_order(method):
    vectors, _ = planted(400, 32, seed=5, low=0.88, high=0.99)
    rng = np.random.default_rng(6)
    scores = rng.integers(0, 3, len(vectors)).astype(float)  # many ties, broken by ids
    ids = [f"id-{value:05d}" for value in rng.permutation(len(vectors))]
    result = deduplicate(vectors, scores, ids, method=method)
    shuffle = rng.permutation(len(vectors))
    shuffled = deduplicate(vectors[shuffle], scores[shuffle], [ids[i] for i in shuffle], method=method)
    assert (shuffled.keep == result.keep[shuffle]).all()
    assert (shuffle[shuffled.representative] == result.representative[shuffle]).all()
    assert (shuffled.similarity == result.similarity[shuffle]).all()
    assert 0 < (~result.keep).sum() < len(vectors) // 2


def test_exact_and_ivf_agree_on_planted_groups():
    vectors, groups = planted(2000, 48, seed=7, low=0.92, high=0.99)
    scores = np.random.default_rng(8).random(len(vectors))
    exact = deduplicate(vectors, scores, method="exact")
    ivf = deduplicate(vectors, scores, method="ivf", nprobe=16)
    assert (exact.method, ivf.method) == ("exact", "ivf")
    assert (exact.keep == ivf.keep).all() and (exact.representative == ivf.representative).all()
    assert (exact.similarity == ivf.similarity).all()
    assert 2000 <= exact.keep.sum() < len(vectors)  # two duplicates of one base may be < 0.9 from each other
    pairs_exact, pairs_ivf = similar_pairs(vectors, 0.9, "exact"), similar_pairs(vectors, 0.9, "ivf", nprobe=16)
    assert all((a == b).all() for a, b in zip(pairs_exact, pairs_ivf, strict=True))
    i, j, _ = pairs_exact
    assert (i < j).all() and (groups[i] == groups[j]).all()


def test_auto_switches_to_ivf_above_the_exact_limit():
    vectors, _ = planted(100, 16, seed=9)
    assert deduplicate(vectors, exact_limit=len(vectors)).method == "exact"
    assert deduplicate(vectors, exact_limit=len(vectors) - 1).method == "ivf"


def test_vectors_are_renormalised_and_identical_rows_merge_at_threshold_one():
    vectors, _ = planted(50, 16, seed=10)
    scale = np.random.default_rng(11).uniform(0.1, 100, (len(vectors), 1)).astype(np.float32)
    assert (deduplicate(vectors * scale).keep == deduplicate(vectors).keep).all()
    twins = np.vstack([vectors[:5], vectors[:5] * 3])
    result = deduplicate(twins, threshold=1.0)
    assert result.keep.tolist() == [True] * 5 + [False] * 5 and result.representative[5:].tolist() == list(range(5))


@pytest.mark.parametrize("method", ["auto", "exact", "ivf"])
@pytest.mark.parametrize("shape", [(0, 0), (0, 8), (1, 8)])
def test_empty_and_single_inputs(method, shape):
    vectors = np.ones(shape, np.float32)
    result = deduplicate(vectors, np.ones(shape[0]), ["x"] * shape[0], method=method)
    assert isinstance(result, DedupResult)
    assert result.keep.tolist() == [True] * shape[0]
    assert result.representative.tolist() == list(range(shape[0]))
    assert result.similarity.tolist() == [1.0] * shape[0]
    assert all(len(part) == 0 for part in similar_pairs(vectors, 0.9, method))


@pytest.mark.parametrize(
    ("vectors", "kwargs", "message"),
    [
        (np.array([[1.0, 0.0], [0.0, 0.0]]), {}, r"zero vectors .*rows \[1\]"),
        (np.array([[1.0, np.nan]]), {}, "NaN or infinite"),
        (np.array([[1.0, np.inf]]), {}, "NaN or infinite"),
        (np.ones(3), {}, "2-D"),
        (np.ones((2, 2), np.int64), {}, "float"),
        (np.ones((2, 2)), {"threshold": 0.0}, r"threshold must be in \(0, 1\]"),
        (np.ones((2, 2)), {"threshold": 1.5}, r"threshold must be in \(0, 1\]"),
        (np.ones((2, 2)), {"scores": np.ones(3)}, "scores"),
        (np.ones((2, 2)), {"scores": np.array([1.0, np.nan])}, "scores"),
        (np.ones((2, 2)), {"ids": ["a"]}, "ids"),
        (np.ones((2, 2)), {"method": "lsh"}, "method"),
        (np.ones((2, 2)), {"method": "ivf", "nprobe": 0}, "nprobe"),
        (np.ones((2, 2)), {"block": 0}, "block"),
    ],
)
def test_bad_input_raises(vectors, kwargs, message):
    with pytest.raises(ValueError, match=message):
        deduplicate(vectors, **kwargs)

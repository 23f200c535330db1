import hashlib
import re

import pytest

from mining_assets.partitions import (
    DATASET_PREFIX,
    dataset_key,
    is_dataset_key,
    is_slug,
    keyword_slug,
    normalize_keyword,
    storage_key,
)

HOSTILE = [
    "../../etc/passwd",
    "..",
    "he said \"door\" 'open'",
    "<script>alert(1)</script>",
    "<b>glass</b> door",
    "🚪🚪",
    "door 🚪",
    "x" * 200,
    "glass/door\\window",
    "Glass Door",
    "glass-door",
    "glass  door ",
    "café",
    "ドア",
]


@pytest.mark.parametrize(
    ("text", "slug"),
    [("glass door", "glass-door"), ("robot arm 2", "robot-arm-2"), ("door", "door")],
)
def test_plain_keywords_get_readable_slugs(text, slug):
    assert keyword_slug(text) == slug


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_keywords_become_safe_slugs(text):
    slug = keyword_slug(text)
    assert is_slug(slug)
    assert len(slug) <= 61
    assert "/" not in slug and ".." not in slug and "<" not in slug and '"' not in slug
    assert storage_key(slug) == slug


def test_distinct_keywords_never_share_a_key():
    texts = ["glass door", "Glass Door", "glass-door", "glass_door", "glass door!", "glass  door"]
    slugs = {normalize_keyword(t): keyword_slug(t) for t in texts}
    # "glass door" and "glass  door" are the same keyword once white space is folded
    assert len(set(slugs.values())) == len(slugs) == 5
    long_a, long_b = "a " * 99 + "x", "a " * 99 + "y"
    assert keyword_slug(long_a) != keyword_slug(long_b)


@pytest.mark.parametrize("text", ["", "   ", "a\x00b", "tab\x07", "x" * 501])
def test_unusable_keywords_are_refused(text):
    with pytest.raises(ValueError):
        keyword_slug(text)


@pytest.mark.parametrize("key", ["glass door", "../x", "<b>", "Glass-Door"])
def test_free_text_partition_keys_are_slugged_for_storage(key):
    assert re.fullmatch(r"[a-z0-9-]+__[0-9a-f]{16}", storage_key(key)) and storage_key(key) != key


COLLIDING = ["glass door", "glass-door", "Glass Door", "GLASS-DOOR", "glass  door", "glass_door", "glass__door",
             "glass-door!", "glass.door", "glass-door_", "_glass-door", "glass-door__", "glass door "]  # fmt: skip


def test_storage_keys_of_keys_that_differ_only_in_case_spaces_punctuation_and_underscores_never_meet():
    keys = {key: storage_key(key) for key in COLLIDING}
    assert len(set(keys.values())) == len(COLLIDING)
    assert keys["glass-door"] == "glass-door"  # a slug is its own storage key
    for key, stored in keys.items():
        assert re.fullmatch(r"[a-z0-9_-]+", stored), stored
        if key != "glass-door":
            readable, digest = stored.split("__")
            assert readable == "glass-door" and len(digest) == 16
            assert digest == hashlib.sha256(key.encode()).hexdigest()[:16]


def test_a_slug_key_with_its_hash_is_its_own_storage_key_and_never_a_hashed_one():
    slug = keyword_slug("Glass Door")  # glass-door_<12 hex>: a slug, with one underscore
    assert is_slug(slug) and storage_key(slug) == slug
    assert "__" not in slug and all("__" in storage_key(k) for k in COLLIDING if not is_slug(k))


def test_the_doctests_hold():
    import doctest

    import mining_assets.partitions as partitions

    failed, tried = doctest.testmod(partitions)
    assert tried >= 7 and not failed


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("cats", "dataset--cats"),
        ("real photos 2024", "dataset--real-photos-2024"),
        ("  gen   set ", "dataset--gen-set"),
    ],
)
def test_a_dataset_key_is_the_prefix_and_the_slug_of_its_name(name, key):
    assert dataset_key(name) == key == DATASET_PREFIX + keyword_slug(name)
    assert is_dataset_key(key)


@pytest.mark.parametrize(
    "text", ["glass door", "dataset", "dataset cats", "dataset--cats", "dataset - - cats", *HOSTILE]
)
def test_no_keyword_is_ever_a_dataset_key(text):
    slug = keyword_slug(text)
    assert "--" not in slug and not is_dataset_key(slug)
    assert dataset_key(text) != slug and is_dataset_key(dataset_key(text))


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_dataset_names_become_safe_distinct_keys(text):
    key = dataset_key(text)
    assert is_slug(key.removeprefix(DATASET_PREFIX))
    assert "/" not in key and ".." not in key and "<" not in key and '"' not in key
    assert storage_key(key) != storage_key(keyword_slug(text))  # a dataset's files are never a keyword's


def test_distinct_dataset_names_never_share_a_key():
    names = ["cats", "Cats", "cats!", "cats 2", "cats  "]
    assert len({dataset_key(name) for name in names}) == 4  # "cats  " is "cats" once white space is folded


@pytest.mark.parametrize("name", ["", "   ", "a\x00b", "x" * 501])
def test_unusable_dataset_names_are_refused(name):
    with pytest.raises(ValueError):
        dataset_key(name)


@pytest.mark.parametrize("key", ["cats", "dataset-cats", "datasets--x", "", "DATASET--cats", " dataset--cats"])
def test_other_keys_are_not_dataset_keys(key):
    assert not is_dataset_key(key)

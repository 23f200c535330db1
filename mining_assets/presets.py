"""Keyword presets: ready-made lists of search queries added as keyword partitions in one step.

``actions`` holds the eight robot-action categories, five search queries each (40 partitions); each keyword is
tagged with its category in the warehouse table ``keyword_tags``, so reports and exports can group by action.
"""

from typing import TYPE_CHECKING

import dagster as dg

from mining_assets.keywords import KEYWORDS_LEASE, add_keyword_partitions, record_keywords
from mining_assets.warehouse import execute_with_rows
from resources.warehouse import Warehouse

if TYPE_CHECKING:
    pass

PRESETS: dict[str, dict[str, list[str]]] = {
    "actions": {
        "reaching": ["person reaching for object", "hand reaching out", "reaching for a shelf",
                     "arm extended reaching", "child reaching up"],
        "grasping": ["hand grasping object", "gripping a cup", "grasping a handle", "fingers grasping a ball",
                     "hand gripping a tool"],
        "lifting": ["person lifting a box", "lifting a heavy object", "lifting a bag", "hands lifting a crate",
                    "lifting a chair"],
        "pushing": ["person pushing a cart", "pushing a door", "pushing a box", "pushing a stroller",
                    "hands pushing a wall"],
        "pulling": ["person pulling a rope", "pulling a door open", "pulling a drawer", "pulling a cart",
                    "pulling a suitcase"],
        "waving": ["person waving hand", "waving hello", "waving goodbye", "child waving", "hand wave greeting"],
        "pointing": ["person pointing finger", "pointing at a screen", "pointing the way", "hand pointing up",
                     "teacher pointing at a board"],
        "holding": ["person holding an object", "holding a cup", "holding a phone", "holding a box",
                    "hands holding a tool"],
    },
}  # fmt: skip


UPSERT_TAGS = """
MERGE INTO keyword_tags USING (SELECT * FROM _incoming) AS incoming
ON keyword_tags.partition_key = incoming.partition_key AND keyword_tags.preset = incoming.preset
WHEN MATCHED THEN UPDATE SET category = incoming.category
WHEN NOT MATCHED THEN INSERT (partition_key, preset, category)
    VALUES (incoming.partition_key, incoming.preset, incoming.category)
"""


def preset_keywords(preset: str) -> list[tuple[str, str]]:
    """(category, keyword) pairs of a preset, in order.

    Raises:
        ValueError: no preset of that name.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return [(category, query) for category, queries in PRESETS[preset].items() for query in queries]


def register_preset(warehouse: Warehouse, preset: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Record a preset's keywords and their categories, in one transaction holding the keywords lease (which also
    keeps two writers of keyword_tags apart); recording a preset again changes nothing.

    Returns:
        (partition_key, keyword, category) for each keyword and (text, reason) for each refused (a key already
        owned by another text).
    """
    import pandas as pd

    entries = preset_keywords(preset)
    category_of = {keyword: category for category, keyword in entries}
    for attempt in warehouse.retrying(lease=KEYWORDS_LEASE):
        with attempt as conn:
            pairs, rejected = record_keywords(conn, [keyword for _, keyword in entries])
            added = [(key, keyword, category_of[keyword]) for key, keyword in pairs]
            if added:
                tags = pd.DataFrame(added, columns=["partition_key", "keyword", "category"])
                execute_with_rows(conn, UPSERT_TAGS, tags.drop(columns="keyword").assign(preset=preset))
    return added, rejected


class PresetConfig(dg.Config):
    preset: str = "actions"


@dg.op
def register_preset_partitions(context: dg.OpExecutionContext, config: PresetConfig, warehouse: Warehouse) -> None:
    """Add a keyword partition for every query of a preset, tagged with its category."""
    added, rejected = register_preset(warehouse, config.preset)
    new = add_keyword_partitions(context.instance, [key for key, _, _ in added])
    context.log.info(f"preset {config.preset!r}: {len(added)} keywords, {len(new)} new partitions")
    for text, reason in rejected:
        context.log.error(f"refused {text!r}: {reason}")


@dg.job(
    description="Add a preset's keyword partitions (actions: 8 robot actions x 5 queries). Config: preset",
    executor_def=dg.in_process_executor,
)
def add_preset_keywords() -> None:
    register_preset_partitions()

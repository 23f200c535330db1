"""What the vision-language model is asked, and the JSON it must answer with. A prompt's version is a digest of
its text and schema, so editing either describes (or categorizes) again exactly what it changes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mining_assets.language.category_list import CategoryList

DESCRIPTION_PROMPT = """Describe this image for a dataset catalogue. Answer in JSON with:
- content: what the image shows, in one or two plain sentences;
- setting: where it takes place (indoors, a street, a studio, nature ...), or "" when it can't be told;
- people: who is in it and what they are doing, or "" when there is nobody;
- objects: the main objects, at most 10, as short nouns;
- style: photograph, render, illustration or screenshot, with its lighting and look, in a few words.
Describe only what is visible; do not guess names of people or places."""

DESCRIPTION_SCHEMA: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "content": {"type": "STRING"},
        "setting": {"type": "STRING"},
        "people": {"type": "STRING"},
        "objects": {"type": "ARRAY", "items": {"type": "STRING"}},
        "style": {"type": "STRING"},
    },
    "required": ["content", "setting", "people", "objects", "style"],
}

CATEGORY_PROMPT = """Sort the image described below into the categories of this list. Choose the one category that
fits it best as primary, and at most {most} categories in all, only from the list, spelled as listed.

Categories:
{categories}

Description of the image (JSON):
{description}"""


def version_of(prompt: str, schema: dict[str, Any]) -> str:
    """12 hex of sha256 over a prompt's text and schema."""
    text = json.dumps([prompt, schema], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


DESCRIPTION_VERSION = "describe-" + version_of(DESCRIPTION_PROMPT, DESCRIPTION_SCHEMA)


def category_schema(categories: CategoryList) -> dict[str, Any]:
    """The reply's schema: a primary category and a list of categories, each one of the list's (as an enum, so the
    model is held to the list; the reply is still checked against it)."""
    listed = {"type": "STRING", "enum": categories.categories}
    return {
        "type": "OBJECT",
        "properties": {"primary": listed, "categories": {"type": "ARRAY", "items": listed}},
        "required": ["primary", "categories"],
    }


def loose(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without its enums: what a reply is parsed against, so that a name outside the list reaches
    ``checked_categories`` (and is dropped or recorded there) instead of failing the whole reply."""
    if isinstance(schema, dict):
        return {key: loose(value) for key, value in schema.items() if key != "enum"}
    return schema


def category_prompt(categories: CategoryList, description: dict[str, Any], most: int) -> str:
    """The categorization request for one description (its fields as JSON: text the model reads, never code)."""
    lines = "\n".join(f"- {name}: {about}" if about else f"- {name}" for name, about in categories.rows)
    text = json.dumps(description, ensure_ascii=False, sort_keys=True)
    return CATEGORY_PROMPT.format(most=most, categories=lines, description=text)


CATEGORY_VERSION = "categorize-" + version_of(CATEGORY_PROMPT, {"schema": "category_schema"})


def checked_categories(
    reply: dict[str, Any], categories: CategoryList, most: int
) -> tuple[list[str], list[str], str | None]:
    """The listed categories of a reply (primary first, at most ``most``), the named ones not on the list, and why
    the reply can't be used (None when it can). A primary not on the list makes the reply invalid: it is recorded,
    never replaced by a guess; other unlisted names are dropped."""
    named = reply.get("categories")
    primary = reply.get("primary")
    if not isinstance(named, list) or not all(isinstance(item, str) for item in named) or not isinstance(primary, str):
        return [], [], "reply does not hold a primary category and a list of categories"
    listed_primary = categories.lookup(primary)
    kept: list[str] = [listed_primary] if listed_primary else []
    dropped: list[str] = [] if listed_primary else [primary]
    for item in named:
        listed = categories.lookup(item)
        if listed is None:
            dropped.append(item)
        elif listed not in kept:
            kept.append(listed)
    dropped = list(dict.fromkeys(dropped))
    if listed_primary is None:
        return [], dropped, f"primary category {primary[:80]!r} is not on the list {categories.name}"
    return kept[:most], dropped, None

"""categories: every frame of a keyword sorted into the project's category list, by Gemini from its description,
or, without a Gemini key, zero-shot on the image with the text-image filter (SigLIP)."""

import dagster as dg
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.frames import frame_images, frames
from mining_assets.keyword_settings import stage_config
from mining_assets.language.category_list import CategoryList, CategoryListError, load_category_list
from mining_assets.language.descriptions import TEXT_FIELDS, descriptions
from mining_assets.language.prompts import (
    CATEGORY_VERSION,
    category_prompt,
    category_schema,
    checked_categories,
    loose,
)
from mining_assets.language.requests import append_shared, send_all, usage_metadata
from mining_assets.language.zero_shot import category_prompts, chosen, zero_shot_scores
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.pools import VISION_MODELS
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.common import frame_loader
from mining_assets.vision.images import MIN_SIDE
from mining_assets.warehouse import (
    insert_rows,
    record_errors,
    replace_partition_rows,
    table_definition_metadata,
    table_report,
    unique_key_spec,
)
from mining_assets.work import model_settings, work_key
from resources.blob_store import BlobStore
from resources.gemini import GeminiResource, Reply
from resources.models.text_filter import TextImageFilter
from resources.warehouse import Warehouse

OWNED_TABLES = ["frame_categories", "category_results", "category_lists"]
METHODS = ("auto", "gemini", "siglip")


class CategoriesConfig(dg.Config):
    method: str = "auto"  # auto (gemini with a Gemini key, else siglip), gemini or siglip
    category_list: str | None = None  # a CSV of categories (category, description); None: the project's list
    model: str | None = None  # gemini: the model; None: the resource's category_model
    max_categories: int = 3  # gemini: at most this many categories an image, the primary included
    template: str = "a photo of {}."  # siglip: how a category is put to the model
    threshold: float = 0.5  # siglip: more categories than the best one are kept from this score
    min_side: int = MIN_SIDE


def record_list(warehouse: Warehouse, categories: CategoryList) -> None:
    """Keep the list a result refers to (its version's rows, once)."""
    rows = pd.DataFrame(
        [(categories.version, categories.name, i, name, about) for i, (name, about) in enumerate(categories.rows)],
        columns=["list_version", "list_name", "position", "category", "description"],
    )
    for attempt in warehouse.retrying(lease=f"category_lists:{categories.version}"):
        with attempt as conn:
            (stored,) = conn.execute(
                "SELECT count(*) FROM category_lists WHERE list_version = ?", [categories.version]
            ).fetchone()
            if not stored:
                insert_rows(conn, "category_lists", rows)


def result_row(sha: str, key: str, method: str, model: str, version: str, kept: list[str], **fields) -> dict:
    return {
        "frame_sha256": sha,
        "work_key": key,
        "method": method,
        "model": model,
        "list_version": version,
        "categories": kept,
        "scores": None,
        "description_key": None,
        "reply": None,
        "dropped": None,
        "prompt_tokens": None,
        "output_tokens": None,
        "cost_usd": None,
        "via": "local",
        "request_id": None,
        **fields,
    }


def by_gemini(config, categories, catalog, gemini, warehouse, partition_key):
    """Results of the frames' descriptions categorized by Gemini: (result rows new this run, the work key of each
    content, reasons by content, usage, how many were sent)."""
    model = config.model or gemini.category_model
    for attempt in warehouse.retrying():
        with attempt as conn:
            described = conn.execute(
                f"SELECT f.frame_sha256, f.work_key AS description_key, {', '.join('d.' + c for c in TEXT_FIELDS)}, "
                "d.objects FROM frame_descriptions f JOIN descriptions d USING (frame_sha256, work_key) "
                "WHERE f.partition_key = ? "
                "QUALIFY row_number() OVER (PARTITION BY f.frame_sha256 ORDER BY f.frame_id) = 1",
                [partition_key],
            ).df()
    described["work_key"] = [
        work_key(
            stage="categories",
            method="gemini",
            model=model,
            prompt=CATEGORY_VERSION,
            list=categories.version,
            most=config.max_categories,
            description=key,
        )
        for key in described["description_key"]
    ]
    keys = dict(zip(described["frame_sha256"], described["work_key"], strict=True))
    reasons = {
        sha: "no description: descriptions has not described this image (see descriptions_errors)"
        for sha in set(catalog["sha256"]) - set(keys)
    }
    known = stored_results(warehouse, keys)
    todo = described[~described["frame_sha256"].isin(known)]
    session = gemini.session()
    schema = category_schema(categories)
    new: list[dict] = []

    def request(row: dict) -> Reply:
        fields = {name: row[name] for name in TEXT_FIELDS} | {
            "objects": [] if row["objects"] is None else [str(o) for o in row["objects"]]
        }
        prompt = category_prompt(categories, fields, config.max_categories)
        return session.generate(model, prompt, schema, reply_schema=loose(schema))

    def store(replies: list[tuple[dict, Reply]]) -> None:
        good = []
        for row, reply in replies:
            kept, dropped, invalid = checked_categories(reply.data or {}, categories, config.max_categories)
            if reply.status != "ok" or invalid:
                reasons[row["frame_sha256"]] = (
                    f"{reply.status}: {reply.reason}" if reply.status != "ok" else f"invalid reply: {invalid}"
                )
                continue
            good.append(
                result_row(
                    row["frame_sha256"],
                    row["work_key"],
                    "gemini",
                    model,
                    categories.version,
                    kept,
                    description_key=row["description_key"],
                    reply=reply.text,
                    dropped=dropped or None,
                    prompt_tokens=reply.prompt_tokens,
                    output_tokens=reply.output_tokens,
                    cost_usd=reply.cost_usd,
                    via="sync",
                    request_id=reply.response_id,
                )
            )
        append_shared(warehouse, "category_results", pd.DataFrame(good), lease=f"category_results:{categories.version}")
        new.extend(good)

    with session:  # its connections are closed when every reply is in
        failed = send_all(session, todo.to_dict("records"), request, store)
    reasons.update({row["frame_sha256"]: reason for row, reason in failed})
    return new, keys, reasons, session.usage(), len(todo)


def by_siglip(config, categories, catalog, text_filter, blob_store, warehouse, partition_key):
    """Results of zero-shot scoring of the frames' images: (new result rows, the work key of each content,
    reasons by content, how many contents were scored from kept features)."""
    model = text_filter.describe()
    key = work_key(
        stage="categories",
        method="siglip",
        **model_settings(text_filter),
        list=categories.version,
        template=config.template,
        threshold=config.threshold,
    )
    keys = dict.fromkeys(catalog["sha256"], key)
    known = stored_results(warehouse, keys)
    todo = catalog[~catalog["sha256"].isin(known)].drop_duplicates("sha256")
    features_key = work_key(stage="filtered_frames", **model_settings(text_filter))
    for attempt in warehouse.retrying():
        with attempt as conn:
            kept = conn.execute(
                "SELECT frame_sha256, blob_key, shard_row FROM filter_features WHERE work_key = ? "
                "AND frame_sha256 IN (SELECT unnest(?::VARCHAR[]))",
                [features_key, list(todo["sha256"])],
            ).df()
    prompts = category_prompts(categories, config.template)
    scores, failed, from_features = zero_shot_scores(
        todo, kept, text_filter, blob_store, frame_loader(blob_store, config.min_side), prompts
    )
    rows = []
    for sha, vector in scores.items():
        picked, _ = chosen(vector, categories.categories, config.threshold)
        rows.append(result_row(sha, key, "siglip", model, categories.version, picked, scores=vector.tolist()))
    append_shared(warehouse, "category_results", pd.DataFrame(rows), lease=f"category_results:{categories.version}")
    return rows, keys, {frame["sha256"]: reason for frame, reason in failed}, from_features


def stored_results(warehouse: Warehouse, keys: dict[str, str]) -> set[str]:
    """The contents whose result with their work key is stored (by any keyword)."""
    if not keys:
        return set()
    wanted = pd.DataFrame({"frame_sha256": list(keys), "work_key": list(keys.values())})
    for attempt in warehouse.retrying():
        with attempt as conn:
            conn.register("_wanted", wanted)
            found = conn.execute(
                "SELECT DISTINCT r.frame_sha256 FROM category_results r JOIN _wanted w USING (frame_sha256, work_key)"
            ).fetchall()
            conn.unregister("_wanted")
    return {row[0] for row in found}


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[frames, descriptions],
    group_name="language",
    kinds={"gemini", "pytorch", "duckdb"},
    pool=VISION_MODELS,
    metadata=table_definition_metadata("frame_categories"),
    check_specs=[
        dg.AssetCheckSpec(
            "every_frame_accounted",
            asset="categories",
            description="Every catalogued frame has categories from the list, or a recorded reason.",
        ),
        unique_key_spec("categories", OWNED_TABLES),
        output_spec("categories", "categorized frames"),
    ],
)
def categories(
    context: dg.AssetExecutionContext,
    config: CategoriesConfig,
    gemini: GeminiResource,
    text_filter: TextImageFilter,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Each frame's categories from the project's list: Gemini on its description, or SigLIP zero-shot without a key."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    if config.method not in METHODS:
        raise dg.Failure(
            f"categories: method {config.method!r} is not one of {', '.join(METHODS)}", allow_retries=False
        )
    try:
        category_list = load_category_list(config.category_list)
    except CategoryListError as error:
        raise dg.Failure(f"categories: {error}", allow_retries=False) from None
    method = config.method if config.method != "auto" else ("gemini" if gemini.configured() else "siglip")
    if method == "gemini" and not gemini.configured():
        raise dg.Failure(f"categories: method gemini asked for, but {gemini.unavailable_reason()}", allow_retries=False)
    record_list(warehouse, category_list)
    for attempt in warehouse.retrying():
        with attempt as conn:
            catalog = frame_images(conn, partition_key)
    usage, sent, from_features = {}, 0, 0
    if method == "gemini":
        new, keys, reasons, usage, sent = by_gemini(config, category_list, catalog, gemini, warehouse, partition_key)
    else:
        new, keys, reasons, from_features = by_siglip(
            config, category_list, catalog, text_filter, blob_store, warehouse, partition_key
        )

    wanted = pd.DataFrame({"frame_sha256": list(keys), "work_key": list(keys.values())})
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            conn.register("_wanted", wanted)
            results = conn.execute(
                "SELECT r.frame_sha256, r.work_key, r.method, r.list_version, r.categories, "
                "r.categories[1] AS primary_category, list_max(r.scores) AS primary_score "
                "FROM category_results r JOIN _wanted w USING (frame_sha256, work_key) "
                "QUALIFY row_number() OVER (PARTITION BY r.frame_sha256 ORDER BY r.categorized_at) = 1"
            ).df()
            conn.unregister("_wanted")
            rows = (
                catalog[["frame_id", "sha256"]]
                .rename(columns={"sha256": "frame_sha256"})
                .merge(results, on="frame_sha256")
            )
            rows["categories"] = [list(names) for names in rows["categories"]]
            categorized = set(rows["frame_sha256"])
            errors = [
                (frame_id, reasons[sha])
                for frame_id, sha in zip(catalog["frame_id"], catalog["sha256"], strict=True)
                if sha in reasons and sha not in categorized
            ]
            replace_partition_rows(conn, "frame_categories", partition_key, rows.assign(partition_key=partition_key))
            record_errors(conn, partition_key, "categories", errors)
            table, unique = table_report(conn, partition_key, "frame_categories", OWNED_TABLES)
    for item, reason in errors[:20]:
        context.log.warning(f"{item}: {reason}")
    counts = rows["primary_category"].value_counts()
    by_primary = {name: int(counts.get(name, 0)) for name in category_list.categories if counts.get(name, 0)}
    dropped = sorted({name for row in new for name in row.get("dropped") or []})
    unaccounted = len(catalog) - len(rows) - len(errors)
    sample = rows.head(10)
    return dg.MaterializeResult(
        metadata={
            **table,
            **(usage_metadata(usage) if method == "gemini" else {}),
            "method": method,
            "category_list": category_list.name,
            "list_version": category_list.version,
            "frames": len(catalog),
            "categorized": len(rows),
            "categorized_now": len(new),
            "sent": sent,  # gemini: descriptions sent this run
            "scored_from_features": from_features,  # siglip: images scored from filtered_frames' kept features
            "failed": len(errors),
            "by_primary_category": dg.MetadataValue.json(by_primary),
            "dropped_categories": dg.MetadataValue.json(dropped),  # named by a reply, not on the list
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in errors[:50]]),
            "sample": dg.MetadataValue.md(
                markdown_table(
                    ["frame_id", "primary_category", "categories"],
                    [(r.frame_id, r.primary_category, ", ".join(r.categories)) for r in sample.itertuples()],
                    "_no categories_",
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="every_frame_accounted",
                passed=unaccounted == 0,
                metadata={"frames_without_categories_or_reason": unaccounted},
            ),
            unique,
            output_check(
                len(catalog), len(rows), "no frame was categorized" + first_reasons(errors), upstream="frames"
            ),
        ],
    )

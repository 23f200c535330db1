"""descriptions: a structured description of every frame of a keyword by a vision-language model (Gemini)."""

import dagster as dg
import pandas as pd

from mining_assets.checks import first_reasons, output_check, output_spec
from mining_assets.frames import frame_images, frames
from mining_assets.keyword_settings import stage_config
from mining_assets.language.prompts import DESCRIPTION_PROMPT, DESCRIPTION_SCHEMA, DESCRIPTION_VERSION
from mining_assets.language.requests import append_shared, send_all, usage_metadata
from mining_assets.metadata import markdown_table
from mining_assets.partitions import keyword_partitions
from mining_assets.retries import STEP_RETRY
from mining_assets.vision.common import frame_loader
from mining_assets.vision.images import MIN_SIDE, ImageError
from mining_assets.warehouse import (
    record_errors,
    replace_partition_rows,
    table_definition_metadata,
    table_report,
    unique_key_spec,
)
from mining_assets.work import work_key
from resources.blob_store import BlobStore
from resources.gemini import GeminiResource, Reply
from resources.warehouse import Warehouse

OWNED_TABLES = ["frame_descriptions", "descriptions"]
TEXT_FIELDS = ("content", "setting", "people", "style")


class DescriptionsConfig(dg.Config):
    model: str | None = None  # the Gemini model; None: the resource's description_model
    max_frames: int | None = None  # describe at most this many new images a run (None: all of them)
    min_side: int = MIN_SIDE  # images smaller than this on a side are not sent


def description_key(model: str, max_image_side: int) -> str:
    """The work key of a description: the model, the prompt's version and the size the image was sent at."""
    return work_key(stage="descriptions", model=model, prompt=DESCRIPTION_VERSION, max_image_side=max_image_side)


def description_row(sha: str, key: str, model: str, reply: Reply) -> dict:
    """A ``descriptions`` row of an ``ok`` reply (its fields as the schema holds them)."""
    data = reply.data or {}
    return {
        "frame_sha256": sha,
        "work_key": key,
        "model": model,
        "prompt_version": DESCRIPTION_VERSION,
        **{name: str(data.get(name) or "") for name in TEXT_FIELDS},
        "objects": [str(item) for item in data.get("objects") or []],
        "reply": reply.text,
        "prompt_tokens": reply.prompt_tokens,
        "output_tokens": reply.output_tokens,
        "cost_usd": reply.cost_usd,
        "via": "sync",
        "request_id": reply.response_id,
    }


@dg.asset(
    partitions_def=keyword_partitions,
    retry_policy=STEP_RETRY,
    deps=[frames],
    group_name="language",
    kinds={"gemini", "duckdb"},
    metadata=table_definition_metadata("frame_descriptions"),
    check_specs=[
        dg.AssetCheckSpec(
            "described",
            asset="descriptions",
            blocking=False,
            description="Warns when the stage was skipped (no Gemini API key) or left frames without a description.",
        ),
        unique_key_spec("descriptions", OWNED_TABLES),
        output_spec("descriptions", "described frames"),
    ],
)
def descriptions(
    context: dg.AssetExecutionContext,
    config: DescriptionsConfig,
    gemini: GeminiResource,
    blob_store: BlobStore,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """What each frame shows (content, setting, people, objects, style), described once per image by Gemini."""
    config, _ = stage_config(context, config, warehouse)
    partition_key = context.partition_key
    skipped = gemini.unavailable_reason()
    model = config.model or gemini.description_model
    key = description_key(model, gemini.max_image_side)
    for attempt in warehouse.retrying():
        with attempt as conn:
            catalog = frame_images(conn, partition_key)
            known = {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT frame_sha256 FROM descriptions WHERE work_key = ? "
                    "AND frame_sha256 IN (SELECT sha256 FROM frames WHERE partition_key = ?)",
                    [key, partition_key],
                ).fetchall()
            }
            if skipped:  # what is reported of the tables, read in the same snapshot
                table, unique = table_report(conn, partition_key, "frame_descriptions", OWNED_TABLES)
    if skipped:
        # nothing is sent and nothing stored is touched: the descriptions a keyed run made stay as they are
        context.log.warning(f"descriptions skipped: {skipped}")
        return dg.MaterializeResult(
            metadata={
                **table,
                "skipped": skipped,
                "frames": len(catalog),
                "described_before": len(known),
                "model": model,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="described",
                    passed=False,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"skipped": skipped},
                ),
                unique,
                output_check(len(catalog), 0, f"skipped: {skipped}", upstream="frames"),
            ],
        )

    todo = catalog[~catalog["sha256"].isin(known)].drop_duplicates("sha256")
    left_for_later = todo.iloc[config.max_frames :] if config.max_frames is not None else todo.iloc[:0]
    todo = todo.iloc[: config.max_frames] if config.max_frames is not None else todo
    load = frame_loader(blob_store, config.min_side)
    session = gemini.session()
    outcomes: dict[str, str] = {}  # sha -> reason, for the images without a description
    described_now: list[str] = []

    def request(frame: dict) -> Reply:
        return session.generate(model, DESCRIPTION_PROMPT, DESCRIPTION_SCHEMA, [load(frame)])

    def store(replies: list[tuple[dict, Reply]]) -> None:
        good = [description_row(frame["sha256"], key, model, reply) for frame, reply in replies if reply.status == "ok"]
        outcomes.update(
            {frame["sha256"]: f"{reply.status}: {reply.reason}" for frame, reply in replies if reply.status != "ok"}
        )
        append_shared(warehouse, "descriptions", pd.DataFrame(good), lease=f"descriptions:{key}")
        described_now.extend(row["frame_sha256"] for row in good)

    with session:  # its connections are closed when every reply is in
        failed = send_all(session, todo.to_dict("records"), request, store, item_errors=(ImageError,))
    outcomes.update({frame["sha256"]: reason for frame, reason in failed})
    outcomes.update({sha: f"not sent: max_frames={config.max_frames} reached" for sha in left_for_later["sha256"]})

    described = known | set(described_now)
    rows = catalog[catalog["sha256"].isin(described)][["frame_id", "sha256"]].rename(columns={"sha256": "frame_sha256"})
    rows = rows.assign(partition_key=partition_key, work_key=key)
    errors = [
        (frame_id, outcomes[sha])
        for frame_id, sha in zip(catalog["frame_id"], catalog["sha256"], strict=True)
        if sha in outcomes
    ]
    for attempt in warehouse.retrying(lease=partition_key):
        with attempt as conn:
            replace_partition_rows(conn, "frame_descriptions", partition_key, rows)
            record_errors(conn, partition_key, "descriptions", errors)
            table, unique = table_report(conn, partition_key, "frame_descriptions", OWNED_TABLES)
            sample = conn.execute(
                "SELECT f.frame_id, d.content, d.setting, d.people, d.style FROM frame_descriptions f "
                "JOIN descriptions d USING (frame_sha256, work_key) WHERE f.partition_key = ? "
                "ORDER BY f.frame_id LIMIT 10",
                [partition_key],
            ).fetchall()
    for item, reason in errors[:20]:
        context.log.warning(f"{item}: {reason}")
    usage = session.usage()
    unaccounted = len(catalog) - len(rows) - len(errors)
    return dg.MaterializeResult(
        metadata={
            **table,
            **usage_metadata(usage),
            "frames": len(catalog),
            "described": len(rows),
            "described_now": len(described_now),  # images sent and described this run
            "reused": int(catalog["sha256"].isin(known).sum()),  # frames whose image was described before
            "failed": len(errors),
            "model": model,
            "prompt_version": DESCRIPTION_VERSION,
            "work_key": key,
            "problems": dg.MetadataValue.json([{"item": i, "reason": r} for i, r in errors[:50]]),
            "sample": dg.MetadataValue.md(
                markdown_table(["frame_id", "content", "setting", "people", "style"], sample, "_no descriptions_")
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="described",
                passed=not errors and unaccounted == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"without_description": len(errors), "unaccounted": unaccounted},
            ),
            unique,
            output_check(len(catalog), len(rows), "no frame was described" + first_reasons(errors), upstream="frames"),
        ],
    )

"""Settings stored per keyword: each keyword partition may keep its own config of a stage (a folder, classes, a
threshold, a sampling), so one backfill runs many keywords each with its own.

A stage's config for a run is, field by field: the fields the run's config names (whatever their value), else the
keyword's stored settings of that stage, else the config class's default. ``configure`` validates settings
against the stage's config class before storing them; ``stage_config`` is the one call at the top of an asset's
body that resolves its config and shows where each value came from (``settings_from`` metadata).

Table ``keyword_settings`` (DDL beside this module) is written only here.
"""

from __future__ import annotations

import importlib
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg

from mining_assets.sources.templates import TemplateError, resolve_template, template_parts
from resources.warehouse import Warehouse

if TYPE_CHECKING:
    import duckdb

C = TypeVar("C", bound=dg.Config)

# each stage's config class, imported only when asked (the asset modules import only dagster, pandas and numpy)
CONFIG_CLASSES = {
    "media_registry": "mining_assets.sources.media_registry:MediaRegistryConfig",
    "media": "mining_assets.sources.media:MediaConfig",
    "video_frames": "mining_assets.video.frames:FrameSamplingConfig",
    "filtered_frames": "mining_assets.vision.filtered:FilterConfig",
    "frame_embeddings": "mining_assets.vision.embeddings:EmbeddingConfig",
    "unique_frames": "mining_assets.vision.unique:DedupConfig",
    "detections": "mining_assets.vision.detections:DetectionConfig",
    "detection_visualizations": "mining_assets.vision.visualizations:VisualizationConfig",
    "quality_scores": "mining_assets.poses.quality:QualityConfig",
    "poses": "mining_assets.poses.poses:PosesConfig",
    "pose_datasets": "mining_assets.poses.datasets:PoseDatasetsConfig",
    "descriptions": "mining_assets.language.descriptions:DescriptionsConfig",
    "categories": "mining_assets.language.categories:CategoriesConfig",
}
_ONE_RUN = "it names the objects of a single run (the uploads sensor sets it), not a keyword's lasting setting"
NOT_PER_KEYWORD = {
    "media_registry": {
        "s3_keys": _ONE_RUN,
        "s3_objects": _ONE_RUN,
        "keyword": "it is the text a new partition is recorded with, once (the keywords table keeps it)",
    },
    **{
        stage: {"rescore": "it is a one-time action of a run (run the model on every frame again), not a setting"}
        for stage in ("filtered_frames", "frame_embeddings", "detections", "quality_scores", "poses")
    },
}
# fields holding {partition_key} templates, and what they resolve to (sources.templates)
TEMPLATE_FIELDS = {"media_registry": {"local_dir": "path", "s3_prefixes": "s3"}}
SETTINGS_TABLE = "keyword_settings"
SHOWN_CHARS = 300  # a value longer than this (as JSON) is cut in the metadata


class SettingsError(ValueError):
    """Settings refused (an unknown stage or field, a wrong type, a field kept out of per-keyword settings, a
    template this keyword can't use); the message says which and why."""


def settings_lease(partition_key: str) -> str:
    """The write lease of a keyword's settings: read, merged and written by one writer at a time."""
    return f"{SETTINGS_TABLE}:{partition_key}"


def config_class(asset: str) -> type[dg.Config]:
    """The config class of a stage that takes per-keyword settings.

    Raises:
        SettingsError: the stage has none (not a stage, or one without config).
    """
    if asset not in CONFIG_CLASSES:
        raise SettingsError(f"unknown stage {asset!r}: settings are kept for {', '.join(CONFIG_CLASSES)}")
    module, name = CONFIG_CLASSES[asset].split(":")
    return getattr(importlib.import_module(module), name)


def check_fields(asset: str, fields: Iterable[str]) -> None:
    """Refuse fields the stage's config does not have, and fields never stored per keyword (with the reason).

    Raises:
        SettingsError: the first problem found, naming the stage's fields.
    """
    known = config_class(asset).model_fields
    for field in fields:
        if field in NOT_PER_KEYWORD.get(asset, {}):
            raise SettingsError(f"{asset}.{field} can't be stored per keyword: {NOT_PER_KEYWORD[asset][field]}")
        if field not in known:
            allowed = [name for name in known if name not in NOT_PER_KEYWORD.get(asset, {})]
            raise SettingsError(f"{asset} has no setting {field!r}; its settings: {', '.join(allowed)}")


def _check_templates(asset: str, values: Mapping[str, Any], partition_key: str | None) -> None:
    for field, kind in TEMPLATE_FIELDS.get(asset, {}).items():
        value = values.get(field)
        for template in [value] if isinstance(value, str) else value or []:
            try:
                template_parts(template)
                if partition_key is not None:
                    resolve_template(template, partition_key, kind)
            except TemplateError as error:
                raise SettingsError(f"{asset}.{field}: {error}") from error


def validated(asset: str, settings: Mapping[str, Any], partition_key: str | None = None) -> dict[str, Any]:
    """The settings as the stage's config reads them (``"0.5"`` for a float is 0.5), as JSON values, in the config's
    field order; templates are checked for ``partition_key`` when it is given.

    Raises:
        SettingsError: an unknown stage or field, a refused field, a wrong type or value, a template refused.
    """
    import pydantic

    check_fields(asset, settings)
    cls = config_class(asset)
    try:
        parsed = cls(**settings).model_dump(mode="json")
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{asset}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in error.errors()
        )
        raise SettingsError(problems) from error
    normal = {field: parsed[field] for field in cls.model_fields if field in settings}
    _check_templates(asset, normal, partition_key)
    return normal


def _read(conn: duckdb.DuckDBPyConnection, partition_key: str | None) -> dict[str, dict[str, dict]]:
    where, params = ("WHERE partition_key = ?", [partition_key]) if partition_key is not None else ("", [])
    rows = conn.execute(
        f"SELECT partition_key, asset, settings FROM {SETTINGS_TABLE} {where} ORDER BY partition_key, asset", params
    ).fetchall()
    found: dict[str, dict[str, dict]] = {}
    for key, asset, text in rows:
        found.setdefault(key, {})[asset] = json.loads(text)
    return found


def _in_block(source: Warehouse | duckdb.DuckDBPyConnection, partition_key: str | None) -> dict[str, dict]:
    if not isinstance(source, Warehouse):
        return _read(source, partition_key)
    for attempt in source.retrying():
        with attempt as conn:
            found = _read(conn, partition_key)
    return found


def settings_by_keyword(
    source: Warehouse | duckdb.DuckDBPyConnection, partition_key: str | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """Stored settings: partition key -> stage -> {field: value}, of one partition or all of them.

    ``source`` is the warehouse (one retried read) or a cursor inside the caller's block.
    """
    return _in_block(source, partition_key)


def stored_settings(source: Warehouse | duckdb.DuckDBPyConnection, partition_key: str, asset: str) -> dict[str, Any]:
    """A keyword's stored settings of one stage ({} when it has none); ``source`` as for ``settings_by_keyword``."""
    return settings_by_keyword(source, partition_key).get(partition_key, {}).get(asset, {})


def configure(
    warehouse: Warehouse,
    partition_key: str,
    asset: str,
    settings: Mapping[str, Any],
    replace: bool = False,
    unset: Sequence[str] = (),
) -> dict[str, Any]:
    """Store a keyword's settings of one stage, merged into what it has (or, with ``replace``, instead of it).

    Args:
        warehouse: The lake.
        partition_key: The keyword's partition key (the caller resolves keyword text to it).
        asset: The stage (a key of ``CONFIG_CLASSES``).
        settings: ``{field: value}``; values as run config would give them.
        replace: Store exactly ``settings``, dropping the fields stored before.
        unset: Fields to drop from what is stored.

    Returns:
        What is stored for the stage now (``{}``: nothing, its row removed).

    Raises:
        SettingsError: the stage, a field, a value or a template is refused; nothing is written.
    """
    check_fields(asset, unset)
    new = validated(asset, settings, partition_key)
    for attempt in warehouse.retrying(lease=settings_lease(partition_key)):
        with attempt as conn:
            current = {} if replace else stored_settings(conn, partition_key, asset)
            merged = {field: value for field, value in {**current, **new}.items() if field not in unset}
            merged = validated(asset, merged, partition_key)  # what was stored before must still hold, too
            conn.execute("DELETE FROM keyword_settings WHERE partition_key = ? AND asset = ?", [partition_key, asset])
            if merged:
                conn.execute(
                    "INSERT INTO keyword_settings (partition_key, asset, settings, updated_at) "
                    "VALUES (?, ?, ?, now()::TIMESTAMP)",
                    [partition_key, asset, json.dumps(merged, sort_keys=True)],
                )
    return merged


# ---------------------------------------------------------------------- a stage's config for one run
def launched_config(context: dg.AssetExecutionContext) -> Mapping[str, Any] | None:
    """The run's config as launched, or None for an asset invoked directly (outside a run)."""
    try:
        return context.run.run_config
    except dg.DagsterError:
        return None


def named_by_run(context: dg.AssetExecutionContext, config: dg.Config) -> set[str]:
    """The fields this run's own config names, read from the run config as launched (``ops.<op>.config``), since
    Dagster fills every default into the config an asset receives. A field named with its default value counts:
    it overrides the keyword's setting for the run. An asset invoked directly (no run) counts the fields its
    config object was built with."""
    run_config = launched_config(context)
    if run_config is None:
        return set(config.model_fields_set)
    op = context.op_execution_context.op.name
    given = ((run_config.get("ops") or {}).get(op) or {}).get("config")
    return set(given) & set(type(config).model_fields) if isinstance(given, Mapping) else set()


def _shown(value: Any) -> Any:
    text = json.dumps(value, default=str)
    return value if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def stage_config(context: dg.AssetExecutionContext, config: C, warehouse: Warehouse) -> tuple[C, dict[str, dict]]:
    """The config a stage uses for this run: its defaults, overlaid by the keyword's stored settings of the stage,
    overlaid by the fields this run's config names.

    Call it once at the top of the asset's body and use only the config it returns::

        config, _ = stage_config(context, config, warehouse)

    In a run it adds the ``settings_from`` metadata to the asset's materialization, ``{field: {"value": ...,
    "from": "keyword" | "run"}}`` for every field not left at its default (``{}``: all defaults), and logs the
    keyword's settings it applied. The keyword is ``context.partition_key``, the stage the asset's name; an
    unpartitioned run uses the run's config alone.

    Returns:
        The resolved config (the same class, validated) and the ``settings_from`` dict.

    Raises:
        dagster.Failure: the keyword's stored settings no longer fit the stage's config (a field gone, a type
            changed); the message names the command that fixes them. Not retried: a retry can't fix it.
    """
    asset = context.asset_key.to_user_string()
    run_fields = named_by_run(context, config)
    stored = stored_settings(warehouse, context.partition_key, asset) if context.has_partition_key else {}
    from_keyword = {field: value for field, value in stored.items() if field not in run_fields}
    cls = type(config)
    try:
        refused = set(NOT_PER_KEYWORD.get(asset, {}))
        unknown = sorted((set(from_keyword) - set(cls.model_fields)) | (set(from_keyword) & refused))
        if unknown:
            raise SettingsError(f"{', '.join(unknown)}: not settings a keyword can keep")
        keyword_values = cls(**from_keyword)
        resolved = config.model_copy(update={field: getattr(keyword_values, field) for field in from_keyword})
    except (SettingsError, ValueError) as error:
        key = context.partition_key
        raise dg.Failure(
            f"the stored settings of keyword {key!r} for {asset} no longer fit its config: {error}; fix them with "
            f"`mining keywords configure {shlex.quote(key)} --clear {asset}` (or --unset {asset}.FIELD)",
            allow_retries=False,
        ) from error
    values = resolved.model_dump(mode="json")
    origins = {field: "keyword" for field in from_keyword} | {field: "run" for field in run_fields}
    shown = {field: {"value": _shown(values[field]), "from": origins[field]} for field in cls.model_fields
             if field in origins}  # fmt: skip
    if launched_config(context) is not None:  # Dagster keeps no metadata of a direct invocation
        context.add_asset_metadata({"settings_from": dg.MetadataValue.json(shown)})
    if from_keyword:
        context.log.info(f"keyword settings of {asset}: {json.dumps(from_keyword, default=str)}")
    return resolved, shown


# ---------------------------------------------------------------------- the command line and the UI job
def parse_value(text: str) -> Any:
    """A setting's value as typed: JSON when it parses (``0.5``, ``true``, ``["door handle"]``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _asset_field(text: str, what: str) -> tuple[str, str]:
    asset, dot, field = text.partition(".")
    if not dot or not asset or not field:
        raise SettingsError(f"{what} {text!r}: expected STAGE.FIELD (e.g. video_frames.every_s)")
    return asset, field


def parse_assignments(texts: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``STAGE.FIELD=VALUE`` texts as {stage: {field: value}} (values by ``parse_value``; a later one wins).

    Raises:
        SettingsError: a text without ``=`` or without a ``STAGE.FIELD`` before it.
    """
    found: dict[str, dict[str, Any]] = {}
    for text in texts:
        name, equals, value = text.partition("=")
        if not equals:
            raise SettingsError(f"--set {text!r}: expected STAGE.FIELD=VALUE")
        asset, field = _asset_field(name.strip(), "--set")
        found.setdefault(asset, {})[field] = parse_value(value)
    return found


def parse_fields(texts: Iterable[str]) -> dict[str, list[str]]:
    """``STAGE.FIELD`` texts as {stage: [fields]}.

    Raises:
        SettingsError: a text that is not ``STAGE.FIELD``.
    """
    found: dict[str, list[str]] = {}
    for text in texts:
        asset, field = _asset_field(text.strip(), "--unset")
        found.setdefault(asset, []).append(field)
    return found


def settings_value(value: Any) -> dict[str, Any]:
    """Settings given as an object or as its JSON text (the UI job's config takes either).

    Raises:
        SettingsError: neither an object nor JSON text of one.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as error:
            raise SettingsError(f"settings are not JSON: {error}") from error
    if not isinstance(value, Mapping):
        raise SettingsError(f"settings must be an object {{field: value}}, got {type(value).__name__}")
    return dict(value)


def assignments(by_asset: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Stored settings as ``STAGE.FIELD=JSON`` lines, the form ``--set`` takes back."""
    return [f"{asset}.{field}={json.dumps(value, ensure_ascii=False)}"
            for asset, fields in sorted(by_asset.items()) for field, value in fields.items()]  # fmt: skip


def resolve_partition_key(value: str, partitions: Iterable[str]) -> str | None:
    """The keyword partition ``value`` names: itself when it is a partition key (one added by hand in the UI
    included), else the slug of it as keyword text when that is one; None when neither is a partition."""
    from mining_assets.partitions import keyword_slug

    known = set(partitions)
    if value in known:
        return value
    try:
        slug = keyword_slug(value)
    except ValueError:
        return None
    return slug if slug in known else None

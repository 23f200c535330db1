"""``mining datasets``: add a dataset (a named list of images on the upload bucket) and list the datasets with what
their lists matched. ``add`` runs the ``add_dataset`` job in this process, on the instance and the environment's
upload bucket and warehouse, so the run and its partition show in the UI as if launched there."""

from __future__ import annotations

import click
import dagster as dg

MATCHES = """
SELECT d.partition_key, d.name, d.label, d.s3_prefix,
       count(m.listed_name) FILTER (WHERE m.status = 'found') AS found,
       count(m.listed_name) FILTER (WHERE m.status = 'missing') AS missing,
       count(m.listed_name) FILTER (WHERE m.status = 'ambiguous') AS ambiguous,
       count(m.listed_name) FILTER (WHERE m.status = 'refused') AS refused
FROM datasets d LEFT JOIN dataset_matches m USING (partition_key)
GROUP BY ALL ORDER BY d.label, d.partition_key
"""


@click.group()
def datasets() -> None:
    """Datasets: named lists of images on the upload bucket (REAL photographs, GEN generated images), a partition
    each (dataset--<name>)."""


@datasets.command("add")
@click.argument("name")
@click.option("--label", required=True, help="REAL, GEN or another word (kept upper case).")
@click.option("--list", "list_location", required=True, help="The CSV of file names: s3://<upload bucket>/<key> "
              "or a local path.")  # fmt: skip
@click.option("--prefix", "s3_prefix", required=True, help="The upload bucket's prefix holding the files.")
def datasets_add(name: str, label: str, list_location: str, s3_prefix: str) -> None:
    """Add (or update) the dataset NAME and its partition; then run dataset_pipeline for that partition."""
    from mining_assets.cli import _with_warehouse, ensure_dagster_home
    from mining_assets.definitions import uploads_resource
    from mining_assets.sources.datasets import add_dataset

    config = {"name": name, "label": label, "list_location": list_location, "s3_prefix": s3_prefix}
    ensure_dagster_home()

    def run(warehouse):
        with dg.DagsterInstance.get() as instance:
            return add_dataset.execute_in_process(
                # the run's events go to the instance (and the UI); the terminal gets warnings and this command's line
                run_config={
                    "ops": {"record_dataset": {"config": config}},
                    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                },
                instance=instance,
                resources={"uploads": uploads_resource(), "warehouse": warehouse},
                raise_on_error=False,
            )

    result = _with_warehouse(run, create=True)
    if not result.success:
        failure = next(event for event in result.all_events if event.is_step_failure)
        raise click.ClickException(failure.step_failure_data.error.message.strip())
    metadata = {
        key: value.value
        for event in result.all_events
        if event.event_type_value == "STEP_OUTPUT"
        for key, value in event.step_output_data.metadata.items()
    }
    verb = "added" if metadata.get("partition_added") else "updated"
    click.echo(f"{verb} {metadata['partition_key']}  {metadata['label']}  {metadata['name']}")


@datasets.command("list")
def datasets_list() -> None:
    """The datasets, their labels and prefixes, and how many listed names their last registry run found."""
    from mining_assets.cli import _in_warehouse, _table

    rows = _in_warehouse(lambda conn: conn.execute(MATCHES).fetchall())
    if not rows:
        click.echo("no datasets yet: mining datasets add NAME --label REAL --list ... --prefix ...")
        return
    click.echo(_table(["partition", "name", "label", "prefix", "found", "missing", "ambiguous", "refused"], rows))

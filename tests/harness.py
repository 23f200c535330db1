"""The Dagster side of the tests: materialize assets for one keyword partition, read their metadata and checks,
and query the warehouse they wrote."""

import dagster as dg


def materialize_partition(resources: dict, instance, partition_key: str, assets: list, **config):
    """Materialize ``assets`` for a partition (added if new) with ``config`` per op; returns (result, checks)."""
    instance.add_dynamic_partitions("keyword", [partition_key])
    run_config = {"ops": {name: {"config": value} for name, value in config.items()}}
    result = dg.materialize(assets, partition_key=partition_key, resources=resources, instance=instance,
                            run_config=run_config, raise_on_error=True)  # fmt: skip
    checks: dict[str, bool] = {}
    for evaluation in result.get_asset_check_evaluations():  # a name several assets share passes only if all do
        checks[evaluation.check_name] = checks.get(evaluation.check_name, True) and evaluation.passed
    return result, checks


def meta(result, asset: str) -> dict:
    """The metadata values of an asset's (first) materialization in a run."""
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def query(resources: dict, sql: str, *params):
    """Rows of a query against the warehouse the resources write."""
    return resources["warehouse"].execute(sql, params)


def query_dicts(resources: dict, sql: str, *params) -> list[dict]:
    """Rows of a query against the warehouse the resources write, as dicts by column name."""
    return resources["warehouse"].query_dicts(sql, params)


def checks_by_asset(result) -> dict[tuple[str, str], bool]:
    """A run's check results by (asset, check): several assets have a check named `unique_key`."""
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}

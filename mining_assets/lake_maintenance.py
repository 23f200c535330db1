"""lake_maintenance: keeps the lake's many small writes cheap to read, on a schedule.

Every committed write adds Parquet files (a stage's rows of one partition, its delete file); DuckLake's data
inlining would avoid the files but makes every delete of inlined rows conflict with every other on the table, so
writers of different keywords would block each other (measured), and the platform replaces partitions by
delete-then-insert. Instead this asset merges adjacent small files, rewrites files that are mostly deleted rows,
expires snapshots older than the retention, and deletes the files no remaining snapshot needs.
"""

import dagster as dg

from resources.warehouse import Warehouse


class LakeMaintenanceConfig(dg.Config):
    snapshot_retention_days: float = 7.0  # time travel reaches back this far; older snapshots are expired
    file_grace_hours: float = 1.0  # files no snapshot needs are deleted once they are this old (readers finish)


def _data_files(warehouse: Warehouse) -> tuple[int, int]:
    """(data files, snapshots) of the lake now."""
    row = warehouse.execute(
        "SELECT (SELECT count(*) FROM __ducklake_metadata_lake.ducklake_data_file WHERE end_snapshot IS NULL), "
        "(SELECT count(*) FROM __ducklake_metadata_lake.ducklake_snapshot)"
    )[0]
    return int(row[0]), int(row[1])


@dg.asset(group_name="warehouse", kinds={"duckdb"})
def lake_maintenance(
    context: dg.AssetExecutionContext, config: LakeMaintenanceConfig, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Merges the lake's small Parquet files, expires old snapshots and deletes files no snapshot needs."""
    files_before, snapshots_before = _data_files(warehouse)
    steps = {
        "merged": "CALL ducklake_merge_adjacent_files('lake')",
        "rewritten": "CALL ducklake_rewrite_data_files('lake', delete_threshold => 0.5)",
        "expired": f"CALL ducklake_expire_snapshots('lake', older_than => now() - INTERVAL "
        f"{int(config.snapshot_retention_days * 86400)} SECOND)",
        "cleaned": f"CALL ducklake_cleanup_old_files('lake', older_than => now() - INTERVAL "
        f"{int(config.file_grace_hours * 3600)} SECOND)",
        "orphans_deleted": f"CALL ducklake_delete_orphaned_files('lake', older_than => now() - INTERVAL "
        f"{int(config.file_grace_hours * 3600)} SECOND)",
    }
    counts = {}
    for name, statement in steps.items():
        counts[name] = len(warehouse.execute(statement))
        context.log.info(f"{name}: {counts[name]}")
    files_after, snapshots_after = _data_files(warehouse)
    return dg.MaterializeResult(
        metadata={
            "data_files_before": files_before,
            "data_files_after": files_after,
            "snapshots_before": snapshots_before,
            "snapshots_after": snapshots_after,
            **counts,
            "snapshot_retention_days": config.snapshot_retention_days,
        }
    )


lake_maintenance_job = dg.define_asset_job(
    "lake_maintenance_job",
    selection=dg.AssetSelection.assets(lake_maintenance),
    description="Merge the lake's small files, expire old snapshots, delete files no snapshot needs.",
    executor_def=dg.in_process_executor,  # one step
)

lake_maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_schedule",
    job=lake_maintenance_job,
    cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly lake maintenance (03:30).",
)

CREATE TABLE IF NOT EXISTS category_report_files (  -- key: blob_key; the plots and CSVs category_reports last wrote (one report, so no partition_key: DuckLake cannot partition by NULL)
    report_id VARCHAR NOT NULL,       -- 16 hex over the partitions and the rows reported
    report_partition VARCHAR,         -- the partition of a per-partition file; NULL for a plot of several
    kind VARCHAR NOT NULL,            -- 'distribution', 'side_by_side', 'shares' (PNG) or 'labels' (CSV)
    blob_key VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    created_at TIMESTAMP
);

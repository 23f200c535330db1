CREATE TABLE IF NOT EXISTS pose_datasets (  -- key: partition_key, media_id; HDF5 files written by pose_datasets
    partition_key VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,        -- '*' for the keyword's file
    frames INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    sidecar_key VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    content_digest VARCHAR,           -- what the file holds but for its created_at: unchanged, the file is kept
    source_deleted BOOLEAN NOT NULL   -- set by its writer (DuckLake takes only literal defaults, and false is not one)
);

CREATE TABLE IF NOT EXISTS pose_datasets_errors (  -- key: partition_key, item; the media items pose_datasets could not use, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS deleted_sources (  -- key: media_id; originals removed after their extraction was verified
    media_id VARCHAR NOT NULL,
    blob_key VARCHAR NOT NULL,        -- the original's key, no longer in the store
    verified_by VARCHAR NOT NULL,     -- the partition whose pose dataset held every frame of it
    deleted_at TIMESTAMP
);

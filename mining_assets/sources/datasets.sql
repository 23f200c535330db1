CREATE TABLE IF NOT EXISTS datasets (  -- key: partition_key; each named image list, a partition of its own: its label and where its images are
    partition_key VARCHAR NOT NULL,   -- dataset--<name as a slug> (mining_assets.partitions.dataset_key)
    name VARCHAR NOT NULL,            -- as given
    label VARCHAR NOT NULL,           -- REAL (photographs) or GEN (generated images), or another label, upper case
    list_location VARCHAR NOT NULL,   -- the CSV of file names: s3://<upload bucket>/<key> or a local path
    s3_prefix VARCHAR NOT NULL,       -- the upload bucket's prefix searched for the files, sub-folders included
    added_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS frame_embeddings (  -- key: partition_key, frame_id; shards under embeddings/shared.work/<work_key>/ are shared by every keyword
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,     -- the frame's content: outputs are shared by content
    model VARCHAR NOT NULL,
    work_key VARCHAR,                 -- the model and its precision (mining_assets.work): a vector is reused by content and work key
    dim INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,        -- a float32 .npy shard, content-addressed
    uri VARCHAR NOT NULL,
    shard_row INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS frame_embeddings_errors (  -- key: partition_key, item; the frames frame_embeddings could not use, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS prompt_sets (  -- key: partition_key, kind, label; the prompts filtered_frames last scored a keyword against
    partition_key VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,            -- 'class' (also a detector label) or 'caption'
    label VARCHAR NOT NULL,           -- the class or caption as given
    prompt VARCHAR NOT NULL           -- the text the model saw
);

CREATE TABLE IF NOT EXISTS frame_scores (  -- key: partition_key, frame_id, work_key, prompt; every score of the partition's frames, so a new threshold needs no model
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,    -- a score is reused only for the same image content
    model VARCHAR NOT NULL,
    work_key VARCHAR,                 -- the model and its precision (mining_assets.work): scores are reused by content, work key and prompt
    prompt VARCHAR NOT NULL,
    score FLOAT NOT NULL,
    scored_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS filtered_frames (  -- key: partition_key, frame_id
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,     -- the frame's content: outputs are shared by content
    best_prompt VARCHAR NOT NULL,
    best_score FLOAT NOT NULL,
    passed BOOLEAN NOT NULL,
    threshold DOUBLE NOT NULL,
    model VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS filtered_frames_errors (  -- key: partition_key, item; the frames filtered_frames could not use, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS filter_features (  -- key: frame_sha256, work_key; the image tower's unit vector of each frame content, shared by every keyword: a new prompt runs only the text tower
    frame_sha256 VARCHAR NOT NULL,
    work_key VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,        -- a float32 .npy shard under embeddings/shared.work/<work_key>/
    uri VARCHAR NOT NULL,
    shard_row INTEGER NOT NULL,
    stored_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS descriptions (  -- key: frame_sha256, work_key; one structured description per image content, model and prompt version, shared by every keyword: a row is added as each reply arrives (or as a batch job's results are read)
    frame_sha256 VARCHAR NOT NULL,
    work_key VARCHAR NOT NULL,        -- model, prompt version and image size (mining_assets.work)
    model VARCHAR NOT NULL,
    prompt_version VARCHAR NOT NULL,
    content VARCHAR NOT NULL,         -- what the image shows, in a sentence or two
    setting VARCHAR,                  -- where: indoors, a street, a studio, nature ...
    people VARCHAR,                   -- who is in it and what they do; empty when nobody
    objects VARCHAR[],                -- the main objects
    style VARCHAR,                    -- photograph, render, illustration; lighting and look
    reply VARCHAR NOT NULL,           -- the model's JSON as received
    prompt_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd DOUBLE,                  -- at the prices configured when it was described
    via VARCHAR NOT NULL,             -- 'sync' (one request per image) or 'batch' (a Batch API job)
    request_id VARCHAR,               -- the reply's response id, or the batch job and line that answered
    described_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS frame_descriptions (  -- key: partition_key, frame_id; the description each frame of a keyword has
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,
    work_key VARCHAR NOT NULL         -- with frame_sha256, the descriptions row
);

CREATE TABLE IF NOT EXISTS descriptions_errors (  -- key: partition_key, item; the frames descriptions could not describe, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

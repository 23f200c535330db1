CREATE TABLE IF NOT EXISTS category_lists (  -- key: list_version, category; every category list a result was made against
    list_version VARCHAR NOT NULL,    -- 16 hex of sha256 over the list's categories and descriptions, in order
    list_name VARCHAR NOT NULL,       -- the CSV's file name
    position INTEGER NOT NULL,        -- the category's row in the CSV, from 0
    category VARCHAR NOT NULL,
    description VARCHAR,              -- what the category holds, as the CSV says (shown to the model)
    recorded_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS category_results (  -- key: frame_sha256, work_key; one categorization per image content, method, model and list version (and description, for gemini), shared by every keyword
    frame_sha256 VARCHAR NOT NULL,
    work_key VARCHAR NOT NULL,
    method VARCHAR NOT NULL,          -- 'gemini' (the description categorized) or 'siglip' (zero-shot on the image)
    model VARCHAR NOT NULL,
    list_version VARCHAR NOT NULL,
    categories VARCHAR[] NOT NULL,    -- listed categories only, the primary first
    scores FLOAT[],                   -- siglip: the sigmoid score of every listed category, in list order
    description_key VARCHAR,          -- gemini: the work_key of the description categorized
    reply VARCHAR,                    -- gemini: the model's JSON as received
    dropped VARCHAR[],                -- gemini: categories the reply named that are not on the list
    prompt_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd DOUBLE,
    via VARCHAR NOT NULL,             -- 'sync', 'batch' or 'local' (siglip)
    request_id VARCHAR,
    categorized_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS frame_categories (  -- key: partition_key, frame_id; each frame's categories
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,
    work_key VARCHAR NOT NULL,        -- with frame_sha256, the category_results row
    method VARCHAR NOT NULL,
    list_version VARCHAR NOT NULL,
    categories VARCHAR[] NOT NULL,
    primary_category VARCHAR NOT NULL,
    primary_score FLOAT               -- siglip: the primary category's score
);

CREATE TABLE IF NOT EXISTS categories_errors (  -- key: partition_key, item; the frames categories could not categorize, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS keyword_tags (  -- key: partition_key, preset; keywords added from a preset, with their category
    partition_key VARCHAR NOT NULL,
    preset VARCHAR NOT NULL,          -- e.g. actions
    category VARCHAR NOT NULL         -- e.g. grasping
);

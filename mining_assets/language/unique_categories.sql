CREATE TABLE IF NOT EXISTS unique_categories (  -- key: partition_key, category; the categories seen in a keyword's frames, with counts
    partition_key VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    frames BIGINT NOT NULL,           -- frames that have this category among theirs
    primary_frames BIGINT NOT NULL,   -- frames whose primary category it is
    share DOUBLE NOT NULL,            -- primary_frames over the partition's categorized frames
    list_version VARCHAR NOT NULL,
    method VARCHAR NOT NULL
);

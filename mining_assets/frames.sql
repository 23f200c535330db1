CREATE TABLE IF NOT EXISTS frames (  -- key: partition_key, frame_id; the frames of a keyword, videos' and photos' alike
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    media_type VARCHAR NOT NULL,      -- 'video' (a sampled frame) or 'photo' (the photo itself)
    frame_index BIGINT,               -- NULL for photos
    timestamp_s DOUBLE,               -- NULL for photos
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    source_url VARCHAR,
    created_at TIMESTAMP
);

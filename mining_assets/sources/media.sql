CREATE TABLE IF NOT EXISTS media (  -- key: media_id; each video or photo stored once, whatever keywords find it
    media_id VARCHAR NOT NULL,        -- yt-<id>, pexels-<id>, s3-<sha256[:16]>, local-<sha256[:16]> ...
    media_type VARCHAR NOT NULL,      -- video or photo, decided by content
    source VARCHAR NOT NULL,
    blob_key VARCHAR NOT NULL,        -- videos/<media_id>.<ext> or photos/<media_id>.<ext>
    uri VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    width INTEGER NOT NULL,           -- photos: as displayed (EXIF orientation applied)
    height INTEGER NOT NULL,
    duration_s DOUBLE,                -- videos only: as probed
    fps DOUBLE,
    frame_count BIGINT,
    codec VARCHAR,
    stored_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS keyword_media (  -- key: partition_key, item; the stored media item each registry item is
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,        -- the stored media item (for a duplicate: the one with the same content)
    duplicate_of VARCHAR,             -- the registry item of this keyword whose content this one repeats, if any
    fetched_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS media_errors (  -- key: partition_key, item; registry items that could not be fetched or used
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS upload_contents (  -- key: location, etag; which media each upload-bucket object or local file is, by the ETag it was read under: read once, whatever keywords list it
    location VARCHAR NOT NULL,        -- s3://bucket/key, or file:///path
    etag VARCHAR NOT NULL,            -- as listed when it was registered (no quotes); a local file's <bytes>-<mtime ns>
    media_id VARCHAR NOT NULL,        -- the content read: s3-<sha256[:16]>
    recorded_at TIMESTAMP
);

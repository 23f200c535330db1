CREATE TABLE IF NOT EXISTS video_samples (  -- key: media_id, sampling; a video sampled once per sampling settings
    media_id VARCHAR NOT NULL,
    sampling VARCHAR NOT NULL,        -- s<sha256[:12]> of the settings below
    strategy VARCHAR NOT NULL,        -- interval, time or keyframes
    every_n_frames INTEGER NOT NULL,
    every_s DOUBLE NOT NULL,
    max_frames INTEGER NOT NULL,      -- 0: no cap
    jpeg_quality INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    stopped VARCHAR,                  -- why decoding stopped early, if it did (the frames before it are kept)
    sampled_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS video_frames (  -- key: media_id, sampling, frame_index; the frames of each video sample
    media_id VARCHAR NOT NULL,
    sampling VARCHAR NOT NULL,
    frame_index BIGINT NOT NULL,
    frame_id VARCHAR NOT NULL,        -- <media_id>_<frame_index:07d>
    timestamp_s DOUBLE NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,        -- frames/<media_id>/<sampling>/<frame_index:07d>.jpg
    uri VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    created_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS keyword_samples (  -- key: partition_key, media_id; the sample of each video a keyword uses
    partition_key VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,
    sampling VARCHAR NOT NULL,
    sampled_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS video_frames_errors (  -- key: partition_key, item; videos that could not be sampled, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

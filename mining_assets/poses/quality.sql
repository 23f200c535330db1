CREATE TABLE IF NOT EXISTS quality_scores (  -- key: partition_key, frame_id; 0-100 per frame; the formula is in the README
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,     -- the frame's content: outputs are shared by content
    media_id VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    rating VARCHAR NOT NULL,          -- excellent, good, fair, poor
    accepted BOOLEAN NOT NULL,
    threshold DOUBLE NOT NULL,
    pose_points DOUBLE NOT NULL,      -- 0-50
    hand_points DOUBLE NOT NULL,      -- 0-20
    lighting_points DOUBLE NOT NULL,  -- 0-15
    sharpness_points DOUBLE NOT NULL, -- 0-10
    resolution_points DOUBLE NOT NULL,-- 0-5
    pose_visibility DOUBLE,           -- mean landmark visibility of the best pose (NULL: no pose)
    hands_found INTEGER NOT NULL,
    brightness DOUBLE NOT NULL,       -- mean luma 0-255
    contrast DOUBLE NOT NULL,         -- luma standard deviation
    sharpness DOUBLE NOT NULL,        -- variance of the Laplacian
    megapixels DOUBLE NOT NULL,
    image_width INTEGER NOT NULL,     -- the IMAGE-mode landmarks found while scoring, as in `poses`: for a photo
    image_height INTEGER NOT NULL,    -- they are exactly what `poses` would compute, so it copies them
    pose_found BOOLEAN NOT NULL,
    pose_landmarks FLOAT[],
    pose_world_landmarks FLOAT[],
    left_hand FLOAT[],
    left_hand_score FLOAT,
    right_hand FLOAT[],
    right_hand_score FLOAT,
    models VARCHAR NOT NULL,
    work_key VARCHAR                  -- image_work_key: bundles, detection options, min_side (not the threshold); NULL: never reused
);

CREATE TABLE IF NOT EXISTS quality_scores_errors (  -- key: partition_key, item; the frames quality_scores could not use, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

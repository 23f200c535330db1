CREATE TABLE IF NOT EXISTS poses (  -- key: partition_key, frame_id; one row per accepted frame; landmarks as flat float lists
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,     -- the frame's content: outputs are shared by content
    media_id VARCHAR NOT NULL,
    media_type VARCHAR NOT NULL,      -- video or photo
    sequence_index INTEGER NOT NULL,  -- order of the frame in its media item (time order for video)
    timestamp_s DOUBLE,               -- NULL for photos
    image_width INTEGER NOT NULL,
    image_height INTEGER NOT NULL,
    pose_found BOOLEAN NOT NULL,
    pose_landmarks FLOAT[],           -- 33 x (x, y, z, visibility), x and y normalised to the image
    pose_world_landmarks FLOAT[],     -- 33 x (x, y, z) metres, hip-centred
    left_hand FLOAT[],                -- 21 x (x, y, z) normalised; NULL when not found
    left_hand_score FLOAT,
    right_hand FLOAT[],
    right_hand_score FLOAT,
    models VARCHAR NOT NULL,
    work_key VARCHAR                  -- video frame: sequence_work_key of its video's whole sequence; photo: image_work_key (its quality row's when copied); NULL: never reused
);

CREATE TABLE IF NOT EXISTS poses_errors (  -- key: partition_key, item; the frames poses could not use, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

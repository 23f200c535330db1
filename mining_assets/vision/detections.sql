CREATE TABLE IF NOT EXISTS detections (  -- key: partition_key, frame_id, detection_index
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,     -- the frame's content: outputs are shared by content
    detection_index INTEGER NOT NULL,
    label VARCHAR NOT NULL,
    score FLOAT NOT NULL,
    x0 FLOAT NOT NULL,                -- pixels of the stored frame, (x0, y0) top left, (x1, y1) bottom right
    y0 FLOAT NOT NULL,
    x1 FLOAT NOT NULL,
    y1 FLOAT NOT NULL,
    image_width INTEGER NOT NULL,
    image_height INTEGER NOT NULL,
    detector VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS detections_errors (  -- key: partition_key, item; the frames detections could not use, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

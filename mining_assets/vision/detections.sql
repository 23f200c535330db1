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
    detector VARCHAR NOT NULL,
    work_key VARCHAR                  -- detector, precision, labels and threshold (mining_assets.work)
);

CREATE TABLE IF NOT EXISTS detected_frames (  -- key: partition_key, frame_id; each kept frame the detector ran on (or whose boxes were reused), with or without boxes: boxes are reused by frame_sha256 and work_key
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,
    work_key VARCHAR NOT NULL,
    detections INTEGER NOT NULL,      -- boxes kept at the threshold
    raw_outside INTEGER NOT NULL,     -- boxes the model returned beyond the image, before clipping
    raw_degenerate INTEGER NOT NULL   -- boxes without area or with NaN, before they were dropped
);

CREATE TABLE IF NOT EXISTS detections_errors (  -- key: partition_key, item; the frames detections could not use, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);


CREATE TABLE IF NOT EXISTS keywords (
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    added_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS keyword_tags (  -- keywords added from a preset, with their category
    partition_key VARCHAR NOT NULL,
    preset VARCHAR NOT NULL,          -- e.g. actions
    category VARCHAR NOT NULL         -- e.g. grasping
);
CREATE TABLE IF NOT EXISTS videos (
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    url VARCHAR NOT NULL,
    title VARCHAR,
    channel VARCHAR,
    duration_s DOUBLE,
    status VARCHAR NOT NULL DEFAULT 'pending',
    error VARCHAR,
    blob_key VARCHAR,
    uri VARCHAR,
    size_bytes BIGINT,
    width INTEGER,
    height INTEGER,
    fps DOUBLE,
    frame_count BIGINT,
    codec VARCHAR,
    sha256 VARCHAR,
    discovered_at TIMESTAMP,
    updated_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS video_frames (
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    frame_index BIGINT NOT NULL,
    timestamp_s DOUBLE NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS frames (
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
CREATE TABLE IF NOT EXISTS photos (      -- one row per stock photo a keyword found, stored or not
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,        -- '<source>-<source id>'
    source VARCHAR NOT NULL,          -- pexels, unsplash, pixabay
    source_id VARCHAR NOT NULL,
    query VARCHAR NOT NULL,
    page_url VARCHAR NOT NULL,
    image_url VARCHAR NOT NULL,
    photographer VARCHAR,
    photographer_url VARCHAR,
    license VARCHAR NOT NULL,
    description VARCHAR,
    status VARCHAR NOT NULL,          -- stored, duplicate (same bytes as another photo), failed
    error VARCHAR,
    width INTEGER,                    -- as displayed (EXIF orientation applied)
    height INTEGER,
    blob_key VARCHAR,
    uri VARCHAR,
    sha256 VARCHAR,
    stored_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS prompt_sets (   -- the prompts filtered_frames last scored a keyword against
    partition_key VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,            -- 'class' (also a detector label) or 'caption'
    label VARCHAR NOT NULL,           -- the class or caption as given
    prompt VARCHAR NOT NULL           -- the text the model saw
);
CREATE TABLE IF NOT EXISTS frame_scores (  -- every score ever computed, so a new threshold needs no model
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,    -- a score is reused only for the same image content
    model VARCHAR NOT NULL,
    prompt VARCHAR NOT NULL,
    score FLOAT NOT NULL,
    scored_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS filtered_frames (
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    best_prompt VARCHAR NOT NULL,
    best_score FLOAT NOT NULL,
    passed BOOLEAN NOT NULL,
    threshold DOUBLE NOT NULL,
    model VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS frame_embeddings (
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,        -- a float32 .npy shard, content-addressed
    uri VARCHAR NOT NULL,
    shard_row INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS unique_frames (
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    kept BOOLEAN NOT NULL,
    representative_id VARCHAR NOT NULL,  -- the kept frame this one duplicates (itself when kept)
    similarity FLOAT NOT NULL,
    threshold DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS detections (
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
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
CREATE TABLE IF NOT EXISTS uploads (     -- media of a keyword from an S3 bucket or a local collection
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,        -- 's3-<sha256[:16]>' / 'local-<sha256[:16]>' of the content
    source VARCHAR NOT NULL,          -- s3, local
    location VARCHAR NOT NULL,        -- s3://bucket/key or file:///path, as found (never used as a storage path)
    media_type VARCHAR,               -- photo or video, decided by content; NULL when neither
    status VARCHAR NOT NULL,          -- stored, duplicate, failed
    error VARCHAR,
    size_bytes BIGINT,
    sha256 VARCHAR,
    registered_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS quality_scores (  -- 0-100 per frame; the formula is in the README
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
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
    models VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS poses (       -- one row per accepted frame; landmarks as flat float lists
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
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
    models VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS pose_datasets (  -- HDF5 files written by pose_datasets
    partition_key VARCHAR NOT NULL,
    media_id VARCHAR NOT NULL,        -- '*' for the keyword's file
    frames INTEGER NOT NULL,
    blob_key VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    sidecar_key VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    source_deleted BOOLEAN NOT NULL   -- set by its writer (DuckLake takes only literal defaults, and false is not one)
);
CREATE TABLE IF NOT EXISTS partition_leases (  -- who may write a partition now (resources.warehouse); expires by itself
    name VARCHAR NOT NULL,            -- a partition key, or table:<name> for a table without partitions
    holder VARCHAR NOT NULL,
    taken_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS ingest_errors (
    partition_key VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

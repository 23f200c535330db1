CREATE TABLE IF NOT EXISTS unique_frames (  -- key: partition_key, frame_id
    partition_key VARCHAR NOT NULL,
    frame_id VARCHAR NOT NULL,
    frame_sha256 VARCHAR NOT NULL,     -- the frame's content: outputs are shared by content
    kept BOOLEAN NOT NULL,
    representative_id VARCHAR NOT NULL,  -- the kept frame this one duplicates (itself when kept)
    similarity FLOAT NOT NULL,
    threshold DOUBLE NOT NULL
);

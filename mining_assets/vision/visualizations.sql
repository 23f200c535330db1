CREATE TABLE IF NOT EXISTS detection_visualizations_errors (  -- key: partition_key, item; the frames detection_visualizations could not use, and why
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS keyword_settings (  -- key: partition_key, asset; a keyword's own settings of a stage, over its defaults; written only by keyword_settings.configure
    partition_key VARCHAR NOT NULL,
    asset VARCHAR NOT NULL,           -- the stage they apply to: media_registry, video_frames, filtered_frames ...
    settings VARCHAR NOT NULL,        -- JSON object (field: value), validated against the stage's config
    updated_at TIMESTAMP
);

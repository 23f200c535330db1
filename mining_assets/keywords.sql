CREATE TABLE IF NOT EXISTS keywords (  -- key: partition_key; the exact text of each keyword; written only by keywords.record_keywords
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    added_at TIMESTAMP
);

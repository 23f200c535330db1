CREATE TABLE IF NOT EXISTS registry (  -- key: partition_key, item; every item a keyword's sources name, fetched or not
    partition_key VARCHAR NOT NULL,
    keyword VARCHAR NOT NULL,
    item VARCHAR NOT NULL,            -- the media id a source gives (yt-..., pexels-...), or an upload's location
    source VARCHAR NOT NULL,          -- youtube, url, local, s3, pexels, unsplash, pixabay
    media_id VARCHAR,                 -- known before fetching (YouTube, stock); NULL for uploads (named by content)
    source_id VARCHAR,                -- the stock site's own id of a photo
    media_type VARCHAR,               -- video or photo when the source says; NULL for uploads until fetched
    url VARCHAR NOT NULL,             -- where it is fetched from: a page, an image URL, s3://bucket/key, file:///path
    page_url VARCHAR NOT NULL,        -- where a person sees it: the watch page, the photo's page, the upload
    query VARCHAR,                    -- the search that found it
    title VARCHAR,
    channel VARCHAR,
    duration_s DOUBLE,
    photographer VARCHAR,
    photographer_url VARCHAR,
    license VARCHAR,
    description VARCHAR,
    download_location VARCHAR,        -- Unsplash: the endpoint called when the photo is used
    discovered_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS media_registry_errors (  -- key: partition_key, item; searches, listings and URLs that failed
    partition_key VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS upload_objects (  -- key: bucket, key, etag; each upload-bucket object a registry row names
    bucket VARCHAR NOT NULL,
    key VARCHAR NOT NULL,             -- the object's key in the bucket, as listed
    etag VARCHAR NOT NULL,            -- its ETag as listed (no quotes): new content under the same key is a new row
    partition_key VARCHAR NOT NULL,   -- the keyword partition whose registry row (s3://bucket/key) names it
    registered_at TIMESTAMP           -- when a registry last named it: the latest is the object's content now (media)
);

CREATE TABLE IF NOT EXISTS dataset_matches (  -- key: partition_key, listed_name; a dataset's listed names as its latest analysis matched them to the upload bucket's objects
    partition_key VARCHAR NOT NULL,   -- dataset--<name as a slug>
    listed_name VARCHAR NOT NULL,     -- as listed (trimmed); a name listed twice is one row
    status VARCHAR NOT NULL,          -- found, missing, ambiguous (several files match: not fetched) or refused
    object_key VARCHAR,               -- the object fetched for it: NULL unless found
    candidates VARCHAR[],             -- the object keys that match an ambiguous name (empty otherwise)
    analysed_at TIMESTAMP
);

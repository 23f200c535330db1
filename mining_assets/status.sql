-- A media item's status in a keyword, computed from the owners' rows (the first that holds):
--   source_deleted  the original was removed after its extraction was verified (deleted_sources)
--   complete        its frames are in the keyword's frames catalog (frames)
--   framed          its video sample has frames (keyword_samples, video_samples)
--   failed          a stage recorded an error for it (the latest one, with its reason)
--   downloaded      it is stored (keyword_media, media)
--   pending         only a registry row
CREATE OR REPLACE VIEW media_status AS
WITH latest_error AS (
    SELECT partition_key, item, stage, reason FROM ingest_errors
    QUALIFY row_number() OVER (PARTITION BY partition_key, item ORDER BY recorded_at DESC, stage) = 1
),
catalogued AS (SELECT DISTINCT partition_key, media_id FROM frames)
SELECT r.partition_key, r.keyword, r.item, coalesce(k.media_id, r.media_id) AS media_id, r.source,
       coalesce(m.media_type, r.media_type) AS media_type, r.url, r.page_url, r.title, r.channel,
       coalesce(m.duration_s, r.duration_s) AS duration_s,
       CASE
           WHEN d.media_id IS NOT NULL THEN 'source_deleted'
           WHEN c.media_id IS NOT NULL THEN 'complete'
           WHEN s.frames > 0 THEN 'framed'
           WHEN e.reason IS NOT NULL THEN 'failed'
           WHEN m.media_id IS NOT NULL THEN 'downloaded'
           ELSE 'pending'
       END AS status,
       e.reason AS error, e.stage AS error_stage, k.duplicate_of, m.blob_key, m.uri, m.size_bytes, m.sha256,
       m.width, m.height, m.fps, m.frame_count, m.codec, s.sampling, s.frames AS sampled_frames,
       r.discovered_at, k.fetched_at
FROM registry r
LEFT JOIN keyword_media k ON k.partition_key = r.partition_key AND k.item = r.item
LEFT JOIN media m ON m.media_id = k.media_id
LEFT JOIN keyword_samples ks ON ks.partition_key = r.partition_key AND ks.media_id = k.media_id
LEFT JOIN video_samples s ON s.media_id = ks.media_id AND s.sampling = ks.sampling
LEFT JOIN catalogued c ON c.partition_key = r.partition_key AND c.media_id = k.media_id
LEFT JOIN deleted_sources d ON d.media_id = k.media_id
LEFT JOIN latest_error e ON e.partition_key = r.partition_key AND (e.item = r.item OR e.item = k.media_id);

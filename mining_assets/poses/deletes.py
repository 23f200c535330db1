"""Deleting the downloaded originals of a keyword's videos once their extraction was verified (``pose_datasets``
with ``delete_sources``): which may go, who else needs them, and the ``deleted_sources`` records, which always say
exactly what is gone. The rows are written by ``pose_datasets``, the owner of both tables."""

from resources.blob_store import BlobDeleteError, BlobStore

KEYWORD_ROW = "*"  # media_id of the keyword file's row in pose_datasets
# who else needs an original: another keyword's item that is (or, not fetched yet, names) the media item, or
# another media item stored in the same blob
ORIGINAL_USERS = """
SELECT 'keyword_media' AS tbl, partition_key AS other FROM keyword_media WHERE media_id = $1 AND partition_key <> $2
UNION SELECT 'registry', partition_key FROM registry WHERE media_id = $1 AND partition_key <> $2
UNION SELECT 'media', media_id FROM media WHERE blob_key = $3 AND media_id <> $1
ORDER BY 1, 2
"""


def deletable(
    provenance: dict[str, dict], verified: set[str], deleted_before: set[str]
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The originals (media_id -> blob key) a run may delete, and (media_id, reason) for every other item.

    Only a video's original goes, and only once its own file and the keyword file were verified (``verified``);
    photos are kept (a photo is its own frame: the catalog, COCO files and other keywords read it)."""
    originals, kept = {}, []
    for media_id, info in provenance.items():
        if media_id not in verified or KEYWORD_ROW not in verified:
            kept.append((media_id, "its HDF5 files were not all verified"))
        elif media_id in deleted_before:
            kept.append((media_id, "deleted by an earlier run (deleted_sources)"))
        elif info["stored_type"] is None:
            kept.append((media_id, "no stored original on record (media)"))
        elif info["stored_type"] != "video":
            kept.append((media_id, f"a {info['stored_type']}: only videos' originals are deleted"))
        else:
            originals[media_id] = info["source_blob_key"]
    return originals, kept


def original_users(conn, partition_key: str, originals: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """Per original (media_id -> blob key), the (table, other partition or media id) rows that still need it."""
    return {
        media_id: [tuple(row) for row in conn.execute(ORIGINAL_USERS, [media_id, partition_key, key]).fetchall()]
        for media_id, key in originals.items()
    }


def removable(
    blob_store: BlobStore, originals: dict[str, str], users: dict[str, list[tuple[str, str]]]
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Of the originals (media_id -> blob key), those nothing else needs (``users``, from ``original_users``) and
    still in the store; and (media_id, reason) for each one kept."""
    going, kept = {}, []
    for media_id, key in originals.items():
        others = users.get(media_id, [])
        if others:
            where = ", ".join(
                f"media item {other!r} (the same file)" if table == "media" else f"{table} of partition {other!r}"
                for table, other in others[:5]
            )
            kept.append((media_id, f"still needed by {len(others)} other row set(s): {where}"))
        elif not blob_store.exists(key):
            kept.append((media_id, "original already gone from the store, with no record of its deletion"))
        else:
            going[media_id] = key
    return going, kept


def delete_originals(
    blob_store: BlobStore, going: dict[str, str], deleted: list[str], kept: list[tuple[str, str]]
) -> None:
    """Delete the originals (media_id -> blob key), reading what the store answers for each: the media ids whose
    original is gone are added to ``deleted``, (media_id, reason) for each one the store still holds to ``kept``.

    Raises:
        StoreUnavailable: the store failed; ``deleted`` holds those gone until then, the others were not reached.
    """
    for media_id, key in going.items():
        try:
            blob_store.delete([key])
        except BlobDeleteError as error:  # the store answered, refusing this one: reported, never counted
            kept.append((media_id, f"delete refused: {error}"))
            continue
        if blob_store.exists(key):
            kept.append((media_id, "the store still holds it after delete"))
        else:
            deleted.append(media_id)

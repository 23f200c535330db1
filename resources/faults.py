"""Whose fault a failure is, decided by the call that raised it.

An item's own fault (a source that answers 404, a cut-off download, a corrupt video, a fake image) is recorded with
its reason and the rest of the partition goes on. A fault of the platform's own infrastructure (the blob store, the
warehouse, the local disk) is no item's fault: it fails the step, which Dagster retries (``STEP_RETRY`` in
``mining_assets.retries``), and the partition's earlier rows and files stay as they were. Every per-item handler
lets these through::

    except InfrastructureError:
        raise
    except Exception as error:  # the item's own fault: recorded, the rest goes on
        ...
"""

from __future__ import annotations


class InfrastructureError(Exception):
    """The blob store, the warehouse or the local disk failed; the message names what and where (no secrets)."""


class StoreUnavailable(InfrastructureError):
    """A blob-store call failed for a reason other than a missing key (S3 503, a refused connection, a full disk)."""


class LocalDiskError(InfrastructureError):
    """The local disk failed (full, read-only, gone) while a stage wrote its temporary files."""

"""The retry policy of the stages: a step that failed on the infrastructure (an S3 503, a warehouse that is
restarting, a full disk; see ``resources.faults``) runs again after a pause, so a transient fault heals by
itself. Items' own faults never fail a step, so what is retried is the store, the warehouse or the disk.

A step is retried ``MINING_STEP_RETRIES`` times (default 3); the first pause is ``MINING_STEP_RETRY_DELAY_S``
seconds (default 10), doubled each time, with jitter."""

import os

import dagster as dg

STEP_RETRY = dg.RetryPolicy(
    max_retries=int(os.environ.get("MINING_STEP_RETRIES", "3")),
    delay=float(os.environ.get("MINING_STEP_RETRY_DELAY_S", "10")),
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)

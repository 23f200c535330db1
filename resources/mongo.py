"""MongoDB, where pose summaries of the mined media go for robot-training pipelines to query.

The connection URI (it may hold a password) comes from ``MONGODB_URI`` and is read only when a client is made, so
runs that do not export to MongoDB never need it. It is never logged or shown: only ``redacted_host`` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    import pymongo

URI_VARIABLE = "MONGODB_URI"


class MongoConfigError(RuntimeError):
    """The MongoDB URI is missing or unusable; the message never holds the URI."""


def redacted_host(uri: str) -> str:
    """The scheme and hosts of a MongoDB URI without credentials, path or options.

    >>> redacted_host("mongodb://robot:secret@db1:27017,db2:27017/data?authSource=admin")
    'mongodb://***@db1:27017,db2:27017'
    """
    scheme, sep, rest = uri.strip().partition("://")
    if not sep:
        return "<not a MongoDB URI>"
    # a password never follows the last '@', even when it holds an unescaped '@' or '/'
    credentials = "***@" if "@" in rest else ""
    hosts = rest.rpartition("@")[2].split("/", 1)[0].split("?", 1)[0]
    return f"{scheme}://{credentials}{hosts}"


def scrub(text: str, uri: str) -> str:
    """Text with the URI and its user-info (user and password) replaced by '***'."""
    text = text.replace(uri, "***")
    rest = uri.partition("://")[2]
    if "@" in rest:
        user_info = rest.rpartition("@")[0]
        for secret in {user_info, *user_info.split(":", 1)}:
            if len(secret) >= 3:
                text = text.replace(secret, "***")
    return text


class MongoResource(dg.ConfigurableResource):
    """A MongoDB database. Set the URI with ``MONGODB_URI`` (read when a client is made, never shown)."""

    uri: str | None = Field(
        default=None,
        description=f"Connection URI; by default the {URI_VARIABLE} environment variable, read when a client is "
        "made. Set it with dg.EnvVar, never as plain text.",
    )
    database: str = "data_mining_empire"
    app_name: str = "visual-mining"
    server_selection_timeout_ms: int = 20_000

    def connection_uri(self) -> str:
        """The URI to connect with.

        Raises:
            MongoConfigError: neither ``uri`` nor ``MONGODB_URI`` is set.
        """
        uri = self.uri or dg.EnvVar(URI_VARIABLE).get_value()
        if not uri or not uri.strip():
            raise MongoConfigError(f"no MongoDB URI: set {URI_VARIABLE} (e.g. mongodb://user:password@host:27017)")
        return uri.strip()

    def redacted_host(self) -> str:
        """Where the client connects, safe to log: scheme and hosts, credentials masked."""
        return redacted_host(self.connection_uri())

    def get_client(self) -> pymongo.MongoClient:
        """A client for the configured server (pymongo connects in the background, on first use).

        Raises:
            MongoConfigError: the URI is missing or malformed; the message names the host, never the URI.
        """
        uri = self.connection_uri()
        try:
            return self._make_client(uri)
        except Exception as error:
            # pymongo's message may quote the URI: only a scrubbed copy leaves, without the original chained
            reason = scrub(f"{type(error).__name__}: {error}", uri)
            raise MongoConfigError(f"cannot make a MongoDB client for {redacted_host(uri)}: {reason}") from None

    def _make_client(self, uri: str) -> pymongo.MongoClient:
        """The client factory: a real pymongo client here; tests override it with a stand-in."""
        import pymongo

        return pymongo.MongoClient(
            uri, appname=self.app_name, serverSelectionTimeoutMS=self.server_selection_timeout_ms, tz_aware=True
        )

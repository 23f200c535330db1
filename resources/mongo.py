"""MongoDB, where pose summaries of the mined media go for robot-training pipelines to query.

The connection URI (it may hold a password) comes from an environment variable, ``MONGODB_URI`` unless ``uri``
names another (``dg.EnvVar(NAME)`` in code, ``{env: NAME}`` in run config, where a plain string fails validation),
and is read only when a client is made, so runs that do not export to MongoDB never need it. It is never logged or
shown: only ``redacted_host`` is.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import ConfigDict, Field, field_validator

from resources.secrets import EnvVarName, env_var_name, only_env_var

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
    """Text with the URI and its user-info (user and password, as written and percent-decoded) replaced by '***'."""
    text = text.replace(uri, "***")
    rest = uri.partition("://")[2]
    if "@" in rest:
        user_info = rest.rpartition("@")[0]
        secrets = {user_info, *user_info.split(":", 1)}
        for secret in sorted(secrets | {urllib.parse.unquote(secret) for secret in secrets}, key=len, reverse=True):
            if len(secret) >= 3:
                text = text.replace(secret, "***")
    return text


class MongoResource(dg.ConfigurableResource):
    """A MongoDB database. Set the URI with ``MONGODB_URI`` (read when a client is made, never shown)."""

    # pydantic would quote a refused value (a plain-text URI) in its error
    model_config = ConfigDict(hide_input_in_errors=True)

    uri: EnvVarName | None = Field(
        default=None,
        description=f"The environment variable that holds the connection URI: dg.EnvVar(NAME) in code, {{env: NAME}} "
        f"in run config (plain text is refused); by default {URI_VARIABLE}. Read when a client is made.",
    )
    database: str = "data_mining_empire"
    app_name: str = "visual-mining"
    server_selection_timeout_ms: int = 20_000

    _only_env_var = field_validator("uri", mode="before")(only_env_var)

    def connection_uri(self) -> str:
        """The URI to connect with.

        Raises:
            MongoConfigError: the variable is not set (another than MONGODB_URI is not named: run config
                ``{env: {env: X}}`` would make that name the URI itself).
        """
        name = env_var_name(self.uri, URI_VARIABLE)
        uri = (dg.EnvVar(name).get_value() or "").strip()
        if not uri:
            shown = name if name == URI_VARIABLE else "the variable that uri names"
            raise MongoConfigError(f"no MongoDB URI: set {shown} (e.g. mongodb://user:password@host:27017)")
        return uri

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
            # pymongo's message may quote the URI: only a scrubbed copy leaves, raised below, outside this block,
            # so that the original is neither its cause nor its context
            reason = scrub(f"{type(error).__name__}: {error}", uri)
        raise MongoConfigError(f"cannot make a MongoDB client for {redacted_host(uri)}: {reason}")

    def _make_client(self, uri: str) -> pymongo.MongoClient:
        """The client factory: a real pymongo client here; tests override it with a stand-in."""
        import pymongo

        return pymongo.MongoClient(
            uri, appname=self.app_name, serverSelectionTimeoutMS=self.server_selection_timeout_ms, tz_aware=True
        )

"""Secrets: where they come from (the name of an environment variable, never the secret itself) and how text
that might hold one is cleaned before it becomes an error, an event, a log line or metadata."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import dagster as dg

# greedy up to the last '@' before the path: a password may hold an unescaped '@'
_USER_INFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s\"'?#]*@")


def without_credentials(text: str) -> str:
    """Text with the user-info of every URL in it (``https://user:secret@host``) replaced by ``***``."""
    return _USER_INFO.sub(r"\1***@", text)


class EnvVarName(dg.Config):
    """Where a secret comes from: the name of the environment variable that holds it, never the secret itself.
    In run config it reads as Dagster's own env form, ``{env: PEXELS_API_KEY}``."""

    env: str


def only_env_var(value: Any) -> Any:
    """A secret field's input as an ``EnvVarName``: ``dg.EnvVar(NAME)`` or ``{"env": NAME}``.

    Raises:
        ValueError: the value is plain text (``hide_input_in_errors`` on the model keeps it out of the error).
    """
    if isinstance(value, dg.EnvVar):
        return {"env": value.env_var_name}
    if isinstance(value, str):
        raise ValueError("a secret in plain text is refused: set it with dg.EnvVar(NAME) (in run config {env: NAME})")
    return value


def env_var_name(value: EnvVarName | dg.EnvVar | None, default: str) -> str:
    """The variable a secret field names (an ``EnvVar`` when set in code, an ``EnvVarName`` from run config)."""
    if value is None:
        return default
    return value.env_var_name if isinstance(value, dg.EnvVar) else value.env


def scrub_secret(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` replaced by ``***`` in each form it travels in: as is, URL-quoted, repr-escaped."""
    if not secret or not secret.strip():
        return text
    forms = {secret, secret.strip(), urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    forms |= {repr(form)[1:-1] for form in set(forms)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text

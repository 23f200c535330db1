"""Source templates: a local folder or an upload-bucket prefix written once for many keywords, with
``{partition_key}`` standing for each keyword's partition key (``/photos/{partition_key}``,
``collections/{partition_key}/``).

A partition key made by the project is a safe slug, but one added by hand in the UI is any text (``../x``,
``a/b``, ``~root``). So a result is refused, with the reason, when it leaves the template's fixed prefix (the text
before its first placeholder) once normalized: ``/data/{partition_key}`` with ``../x`` is ``/data/../x``, which is
``/x``, outside ``/data/``. Also refused: an absolute (or ``~``) result from a relative template, an empty key, NUL
bytes, and, for S3 prefixes, any ``..`` segment. ``{{`` and ``}}`` stand for literal braces; no other placeholder
exists (keyword text is arbitrary, and a key is what names a keyword's folders and storage).
"""

import os
import posixpath
import string
from typing import Literal

PLACEHOLDER = "partition_key"
TemplateKind = Literal["path", "s3"]


class TemplateError(ValueError):
    """A template that can't be used, or can't be used for this partition key; the message is the reason."""


def template_parts(template: str) -> list[tuple[str, bool]]:
    """The template as (literal text, followed by the placeholder) pieces, braces unescaped.

    Raises:
        TemplateError: unbalanced braces, or a placeholder other than ``{partition_key}``.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise TemplateError(f"template {template!r}: {error} (write {{{{ and }}}} for literal braces)") from error
    parts = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (field != PLACEHOLDER or spec or conversion):
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise TemplateError(f"template {template!r}: unknown placeholder {shown} (only {{{PLACEHOLDER}}})")
        parts.append((literal, field is not None))
    return parts


def is_template(text: str) -> bool:
    """Whether the text holds the ``{partition_key}`` placeholder (it is checked as a template when it does)."""
    return any(placeholder for _, placeholder in template_parts(text))


def fixed_prefix(template: str) -> str:
    """The text before the first placeholder (the whole text, unescaped, when there is none)."""
    prefix = ""
    for literal, placeholder in template_parts(template):
        prefix += literal
        if placeholder:
            break
    return prefix


def substitute(template: str, partition_key: str) -> str:
    """The template with each ``{partition_key}`` replaced, nothing checked but the template itself."""
    parts = template_parts(template)
    return "".join(literal + (partition_key if placeholder else "") for literal, placeholder in parts)


def resolve_template(template: str, partition_key: str, kind: TemplateKind = "path") -> str:
    """The folder (``kind="path"``) or S3 key prefix (``kind="s3"``) a template names for a partition.

    A template without a placeholder is returned as written (a path) once checked for NUL bytes and, for S3,
    ``..`` segments. A path result is normalized (``a/./b`` is ``a/b``), and ``~`` at the start of a template is
    expanded before the check, so the folder read is the one checked.

    Raises:
        TemplateError: the template can't be used, or its result for this key leaves its fixed prefix, is absolute
            (or starts with ``~``) for a relative template, substitutes an empty key, holds a NUL byte, or (S3) a
            ``..`` segment. The message names the template and the reason.
    """
    placeholders = is_template(template)
    if placeholders and not partition_key:
        raise TemplateError(f"template {template!r}: the partition key is empty")
    result = substitute(template, partition_key)
    if "\x00" in result:
        raise TemplateError(f"template {template!r}: the result holds a NUL byte")
    if kind == "s3":
        return _checked_s3(template, result)
    if not placeholders:
        return result
    return _checked_path(template, result)


def _checked_s3(template: str, result: str) -> str:
    fixed = fixed_prefix(template)
    if result.startswith("/") and not fixed.startswith("/"):
        raise TemplateError(f"template {template!r} gives {result!r}: a key starting with / from a relative template")
    if ".." in result.split("/"):
        raise TemplateError(f"template {template!r} gives {result!r}: a '..' segment")
    if not result.startswith(fixed):  # kept for the rule's sake: substitution only appends to the fixed text
        raise TemplateError(f"template {template!r} gives {result!r}, outside {fixed!r}")
    return result


def _checked_path(template: str, result: str) -> str:
    fixed = fixed_prefix(template)
    home = fixed.startswith("~")
    absolute = fixed.startswith("/") or home
    if not absolute and result.startswith(("/", "~")):
        raise TemplateError(f"template {template!r} gives {result!r}: an absolute path from a relative template")
    if home:
        fixed, result = os.path.expanduser(fixed), os.path.expanduser(result)
        if not result.startswith("/"):
            raise TemplateError(f"template {template!r} gives {result!r}: not a folder under {fixed!r}")
    normalized = posixpath.normpath(result)
    head, slash, name_start = fixed.rpartition("/")
    base = posixpath.normpath(head or "/") if slash else "."
    inside = posixpath.relpath(normalized, base)
    if inside in (".", "..") or inside.startswith("../") or not inside.split("/")[0].startswith(name_start):
        where = fixed or "./"
        raise TemplateError(f"template {template!r} gives {result!r}, which is {normalized!r}: outside {where!r}")
    return normalized

"""Strings from files and users on their way into Markdown or HTML (the model card, the
benchmark report).

Every string that zoo did not write itself (a suite name, a model id, a dataset path, a class
name, a device, a value read from run.json, eval.json or results.jsonl) goes through
``text`` (or ``code``/``fence`` where it is shown as code) before it is placed in Markdown:
it becomes one line that shows exactly as written, in any Markdown viewer and in
``zoo.bench.document``'s HTML, never markup. ``<``, ``>`` and ``&`` become character
references, so a viewer that renders raw HTML shows them as text. ``link_allowed`` is the
one allow-list of link targets: http, https, mailto and relative or anchor links; any other
scheme (``javascript:``, ``data:``, ...) is shown as plain text, never linked.
"""

from __future__ import annotations

import html
import re

#: the link schemes a report or card may link to; a link without a scheme is relative
LINK_SCHEMES = ("http", "https", "mailto")

_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MARKUP = re.compile(r"[\\`*_\[\]~]")
_ENTITIES = str.maketrans({"<": "&lt;", ">": "&gt;", "&": "&amp;"})
_LINE_START = re.compile(r"^(?:([#+=-])|(\d+)([.)]))")
_PUNCT_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def one_line(value) -> str:
    """``str(value)`` on one line: line breaks and other control characters as spaces."""
    return _BREAKS.sub(" ", str(value))


def text(value) -> str:
    """``value`` as Markdown that shows exactly its text, on one line: markup characters
    backslash-escaped, ``<``, ``>`` and ``&`` as character references, and a leading
    ``#``, ``-``, ``+``, ``=`` or ``1.`` escaped so that it starts no heading or list."""
    s = _MARKUP.sub(r"\\\g<0>", one_line(value).strip()).translate(_ENTITIES)
    return _LINE_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", s)


def code(value) -> str:
    """``value`` as one inline code span: delimited by a run of backticks longer than any in
    it (padded with a space where it starts or ends with a backtick or a space)."""
    s = one_line(value)
    tick = "`" * (max((len(r) for r in re.findall("`+", s)), default=0) + 1)
    pad = " " if s[:1] in ("`", " ", "") or s[-1:] in ("`", " ") else ""
    return f"{tick}{pad}{s}{pad}{tick}"


def fence(lines: list[str], info: str = "") -> list[str]:
    """``lines`` as a fenced code block whose fence (of backticks, at least three) is longer
    than any backtick run in them, so nothing in them can close it; each line one line."""
    lines = [one_line(ln) for ln in lines]
    run = max((len(r) for ln in lines for r in re.findall("`+", ln)), default=0)
    tick = "`" * max(3, run + 1)
    return [tick + info, *lines, tick]


def link_allowed(href: str) -> bool:
    """Whether ``href`` may be a link: a scheme of ``LINK_SCHEMES``, or none (a relative or
    anchor link). Judged on the target as a browser or Markdown viewer reads it: backslash
    escapes and character references resolved, control characters and spaces dropped."""
    target = html.unescape(_PUNCT_ESCAPE.sub(r"\1", href))
    target = re.sub(r"[\x00-\x20\x7f-\x9f]", "", target)
    m = _SCHEME.match(target)
    if m is None:
        return ":" not in re.split(r"[/?#]", target, maxsplit=1)[0]
    return m[1].lower() in LINK_SCHEMES


__all__ = ["LINK_SCHEMES", "code", "fence", "link_allowed", "one_line", "text"]

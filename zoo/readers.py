"""One reader per text format zoo parses (JSON, TOML): each checks the file's encoding, its
syntax and how deeply it nests before a caller looks at the value, and turns every failure
into one ZooError that names the file, never a RecursionError or a UnicodeDecodeError.

The callers then check the types of what they read (``zoo.bench.rows.check_row``,
``zoo.core.config_from_dict``, the suite's keys); the value they get is plain data at most
``MAX_DEPTH`` containers deep.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError, first_line

#: the deepest nesting of lists and objects zoo accepts in a file it reads (its own files
#: nest a few levels: a results row's per-batch figures, a suite's sampler variants)
MAX_DEPTH = 32


def depth(value: Any) -> int:
    """How many lists and dicts deep ``value`` nests (0 for a scalar); without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, level = stack.pop()
        if isinstance(v, dict | list | tuple):
            deepest = max(deepest, level)
            stack.extend((x, level + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _too_deep(source: str, error: type[Exception]) -> Exception:
    return error(f"{source} nests lists or tables more than {MAX_DEPTH} levels deep; it is "
                 "not a file zoo wrote")


def _shallow(value: Any, source: str, error: type[Exception]) -> Any:
    if depth(value) > MAX_DEPTH:
        raise _too_deep(source, error)
    return value


def parse_json(text: str, source: str, error: type[Exception] = ConfigError) -> Any:
    """The JSON value of ``text`` (``source`` names it in errors, e.g. "FILE line 3"),
    at most ``MAX_DEPTH`` deep; anything else is one ``error``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{source} is not valid JSON ({e.msg} at line {e.lineno} column "
                    f"{e.colno})") from None
    except RecursionError:
        raise _too_deep(source, error) from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise error(f"{source} is not valid JSON ({first_line(e)[:120]})") from None
    return _shallow(value, source, error)


def read_text(path: str | Path, what: str = "file",
              error: type[Exception] = ConfigError) -> str:
    """The UTF-8 text of ``path`` (``what`` says what it is, e.g. "suite file")."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist" if not path.exists()
                    else f"{what} {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path} ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                    f"{e.start}); save it as UTF-8") from None


def read_json(path: str | Path, what: str = "file",
              error: type[Exception] = ConfigError) -> Any:
    """The JSON value of the file ``path``, checked as ``parse_json`` checks text."""
    return parse_json(read_text(path, what, error), f"{what} {path}", error)


def read_toml(path: str | Path, what: str = "file",
              error: type[Exception] = ConfigError) -> dict:
    """The TOML table of the file ``path``: UTF-8, valid TOML, at most ``MAX_DEPTH`` deep."""
    text = read_text(path, what, error)
    try:
        value = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise _too_deep(str(path), error) from None
    return _shallow(value, str(path), error)


__all__ = ["MAX_DEPTH", "depth", "parse_json", "read_json", "read_text", "read_toml"]

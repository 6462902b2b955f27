"""One parser from strings and plain values to typed values, and typed option sets.

``parse_value`` turns what a user gives (a string from ``--set`` or a query string, a TOML
value, a keyword argument) into the type a dataclass field declares, with an error that
names the option and its valid values. ``Options`` is a frozen dataclass of such fields,
parsed at once from a mapping; ``SamplerOptions`` is one sampler's options: the sampler
reads them, and their canonical form keys CUDA graphs and result rows.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .errors import ConfigError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
NONE_WORDS = ("none", "null")


class OptionError(ConfigError):
    """A bad value of one named option (``option``), so a caller can point at its key."""

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option


def _resolve(annotation):
    if isinstance(annotation, str):
        return eval(annotation, {**vars(typing), "tuple": tuple}, {})  # noqa: S307 - our own
    return annotation


def option_number(value, name: str, kind: type = float) -> float | int:
    """A number (or a string of one) as ``kind`` (int or float), else a ConfigError naming it.
    NaN, infinities and integers too large for a float are refused as not finite."""
    what = "an integer" if kind is int else "a number"
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if kind is int and text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise ConfigError(f"{name} must be {what}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    if isinstance(value, numbers.Integral) and kind is int:
        return int(value)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if kind is int:
        if not number.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(number)
    return number


def check_range(value, name: str, *, least=None, above=None, most=None, below=None) -> None:
    """A ConfigError naming ``name`` unless the number ``value`` is finite and within the
    bounds given (``least <= value``, ``above < value``, ``value <= most``, ``value < below``)."""
    try:
        finite = math.isfinite(value)
    except (TypeError, OverflowError):
        finite = isinstance(value, int) and not isinstance(value, bool)
    ok = finite and not isinstance(value, bool) and (
        (least is None or value >= least) and (above is None or value > above)
        and (most is None or value <= most) and (below is None or value < below))
    if not ok:
        parts = [f">= {least}" if least is not None else None,
                 f"> {above}" if above is not None else None,
                 f"<= {most}" if most is not None else None,
                 f"< {below}" if below is not None else None]
        raise ConfigError(f"{name} must be {' and '.join(p for p in parts if p) or 'finite'}, "
                          f"got {value!r}")


#: the seeds torch's generators take: one 64-bit word, read as signed or unsigned
SEED_RANGE = (-(2**63), 2**64)


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` when torch's generators take it (an integer in ``SEED_RANGE``); a
    ConfigError naming ``name`` and the range otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not (
            SEED_RANGE[0] <= seed < SEED_RANGE[1]):
        text = repr(seed)
        text = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"
        raise ConfigError(f"{name} must be an integer in [-2**63, 2**64) (64 bits), got {text}")
    return seed


def option_flag(value, name: str) -> bool:
    """A boolean: a bool, 0/1, or true/false/yes/no/on/off as a string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def parse_value(value, annotation, what: str):
    """``value`` (a string, or a plain value) as the (possibly string) type ``annotation``:
    bool, int, float, str, a Literal, a tuple, an optional (``X | None``) or a union."""
    tp = _resolve(annotation)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (
                isinstance(value, str) and value.strip().lower() in NONE_WORDS)):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(value, arg, what)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{what}: cannot parse {value!r} ({'; '.join(errors)})")
    if origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and value == str(a)):
                return a
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(map(str, args))}")
    if origin is tuple or tp is tuple:
        inner = args[0] if args else str
        if isinstance(value, str):
            value = [t.strip() for t in value.strip("()[]").split(",") if t.strip()]
        if not isinstance(value, Sequence):
            raise ConfigError(f"{what} must be a list, got {value!r}")
        return tuple(parse_value(v, inner, what) for v in value)
    if tp is bool:
        return option_flag(value, what)
    if tp is int:
        return option_number(value, what, int)
    if tp is float:
        return option_number(value, what, float)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{what} must be a string, got {value!r}")
        return value
    return value


def choices(annotation) -> tuple | None:
    """The values of a Literal annotation (a string one too), None for any other type."""
    tp = _resolve(annotation)
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def literal_value(text: str):
    """A value of an option without a declared type: int, float, bool, None or str."""
    low = text.strip().lower()
    if low in NONE_WORDS:
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _plain(v):
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


@dataclasses.dataclass(frozen=True)
class Options:
    """A typed option set: fields with defaults, parsed at once from a mapping."""

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def parse(cls, raw: Mapping[str, Any], what: str = "option"):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise OptionError(f"unknown {what}(s) {', '.join(unknown)}; "
                              f"valid: {', '.join(fields) or 'none'}", unknown[0])
        values = {}
        for k, v in raw.items():
            try:
                values[k] = parse_value(v, fields[k].type, k)
            except OptionError:
                raise
            except ConfigError as e:
                raise OptionError(str(e), k) from None
        out = cls(**values)
        out.check()
        return out

    def check(self) -> None:
        """Ranges and relations of the values (types are checked by ``parse``)."""

    def canonical(self) -> dict:
        """The options as plain JSON data, every field present."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class SamplerOptions(Options):
    """One sampler's options. A family lists its samplers in ``GenerativeModel.samplers``
    (the first is the default unless the model's ``default_sampler`` names another);
    ``sample(n, sampler=NAME, **options)`` parses the options
    into the sampler's class once, and ``bind`` fills in what depends on the model."""

    name: ClassVar[str] = "default"
    #: how a figure marks the sampler's points (a matplotlib marker)
    marker: ClassVar[str] = "^"
    #: fields shown in a label, with their format (the rest appear when not at the default)
    headline: ClassVar[tuple[tuple[str, str], ...]] = ()

    def bind(self, model) -> SamplerOptions:
        """These options for ``model``: model-dependent defaults filled in, checked against
        it. The bound form is what keys graphs and rows."""
        return self

    def key(self) -> tuple:
        return (self.name, *sorted((k, repr(v)) for k, v in self.canonical().items()))

    def network_calls(self) -> int | None:
        """Network evaluations per image of these bound options (the x axis of the
        sampler frontier), or None where the count does not apply."""
        return None

    def label(self) -> str:
        """"ddim, 50 steps, eta 0": the name, options off their defaults, the headline."""
        head = dict(self.headline)
        defaults = type(self)()
        extra = [f"{k}={v}" for k, v in self.canonical().items()
                 if k not in head and v != _plain(getattr(defaults, k))]
        parts = [self.name + (f"({','.join(extra)})" if extra else "")]
        for k, fmt in self.headline:
            v = getattr(self, k)
            if v is not None:
                parts.append(fmt.format(v))
        return ", ".join(parts)


def choose_sampler(samplers: Sequence[type[SamplerOptions]], options: Mapping[str, Any],
                   owner: str, also: Sequence[str] = ()) -> SamplerOptions:
    """Parse ``options`` (with an optional ``sampler`` name, else the first of ``samplers``)
    into the named sampler's options. Errors name the sampler's valid options; an option of
    another sampler of the family says whose it is; ``also`` lists the call's other
    keyword arguments for the message."""
    options = dict(options)
    by_name = {s.name: s for s in samplers}
    name = options.pop("sampler", None)
    if isinstance(name, SamplerOptions):
        if options:
            raise ConfigError(f"give sampler options inside {type(name).__name__}(...), not "
                              f"beside it: {', '.join(sorted(options))}")
        if type(name) not in samplers:
            raise ConfigError(f"{owner} has no sampler {type(name).__name__}; valid: "
                              f"{', '.join(by_name)}")
        return name
    name = samplers[0].name if name is None else str(name)
    if name not in by_name:
        raise ConfigError(f"unknown sampler {name!r} for {owner}; valid: {', '.join(by_name)}")
    cls = by_name[name]
    mine = set(cls.fields())
    for k in options:
        if k in mine:
            continue
        other = next((s.name for s in samplers if k in s.fields()), None)
        if other is not None:
            raise OptionError(f"{k} is an option of sampler={other!r}, not of {name!r}", k)
        every = [*(["sampler"] if len(samplers) > 1 else []),
                 *dict.fromkeys(f for s in samplers for f in s.fields()), *also]
        raise OptionError(f"unknown sampler option(s) {', '.join(sorted(set(options) - mine))} "
                          f"for {owner}; valid: {', '.join(every)}", k)
    return cls.parse(options, "sampler option")

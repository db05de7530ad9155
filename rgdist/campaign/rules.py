"""Validation rules of the campaign schema: value rules (Int, Real, Bool, Choice, Text,
Nullable, AutoOr, ListOf), mapping helpers, the rule-driven section base class, and the
bridge from the library's own checks (rgdist.catalog.ParameterError) to ConfigError.

Every rule is called as ``rule(value, key_path)`` and returns the normalized value or raises
``ConfigError(key_path, message)``. Torch-free, like the whole schema.
"""
from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from dataclasses import field, fields
from typing import ClassVar

from rgdist.campaign.grid import check_int, check_real, got, join
from rgdist.catalog import ParameterError
from rgdist.errors import ConfigError


# --- value rules ---------------------------------------------------------------------------
class Int:
    def __init__(self, lo=None, hi=None):
        self.lo, self.hi = lo, hi

    def __call__(self, value, path):
        return check_int(value, path, self.lo, self.hi)


class Real:
    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False):
        self.args = (lo, hi, lo_open, hi_open)

    def __call__(self, value, path):
        return check_real(value, path, *self.args)


class Bool:
    def __call__(self, value, path):
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {got(value)}")
        return value


class Choice:
    """One of ``options``. ``renamed`` maps a former spelling to its new one: that value is
    refused with a message naming the new spelling."""

    def __init__(self, *options, renamed=None):
        self.options, self.renamed = options, dict(renamed or {})

    def __call__(self, value, path):
        if isinstance(value, str) and value in self.renamed:
            raise ConfigError(path, f"{value!r} is now spelled {self.renamed[value]!r}; must be "
                                    f"one of {', '.join(self.options)}")
        if not isinstance(value, str) or value not in self.options:
            raise ConfigError(path, f"must be one of {', '.join(self.options)}; got {got(value)}")
        return value


class Text:
    """A non-empty one-line string, optionally matching ``pattern`` (described by ``what``)."""

    def __init__(self, pattern=None, what="a non-empty string"):
        self.pattern, self.what = (re.compile(pattern) if pattern else None), what

    def __call__(self, value, path):
        if not isinstance(value, str) or not value or any(ord(c) < 32 for c in value) or (
                self.pattern is not None and not self.pattern.fullmatch(value)):
            raise ConfigError(path, f"must be {self.what}, got {got(value)}")
        return value


class Nullable:
    def __init__(self, rule):
        self.rule = rule

    def __call__(self, value, path):
        return None if value is None else self.rule(value, path)


class AutoOr:
    def __init__(self, rule):
        self.rule = rule

    def __call__(self, value, path):
        return "auto" if value == "auto" else self.rule(value, path)


class ListOf:
    """A list (returned as a tuple) whose items follow ``rule``; optionally strictly increasing
    or free of duplicates."""

    def __init__(self, rule, min_len=0, unique=False, increasing=False):
        self.rule, self.min_len, self.unique, self.increasing = rule, min_len, unique, increasing

    def __call__(self, value, path):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {got(value)}")
        if len(value) < self.min_len:
            raise ConfigError(path, f"must have at least {self.min_len} item(s)")
        items = tuple(self.rule(v, join(path, i)) for i, v in enumerate(value))
        for i in range(1, len(items)):
            if self.increasing and not items[i] > items[i - 1]:
                raise ConfigError(join(path, i), f"must be strictly increasing, got {items[i - 1]!r} "
                                                 f"then {items[i]!r}")
            if self.unique and items[i] in items[:i]:
                raise ConfigError(join(path, i), f"duplicate item {items[i]!r}")
        return items


def rel_file_name(value, path):
    """A relative file name inside the run directory: no absolute path, no '..', no '~'."""
    name = Text()(value, path)
    if name.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", name):
        raise ConfigError(path, f"must be a relative file name inside output.dir, not an absolute path: {name!r}")
    if "\\" in name:
        raise ConfigError(path, f"use '/' as the separator, got {name!r}")
    parts = name.split("/")
    if ".." in parts:
        raise ConfigError(path, f"must stay inside output.dir ('..' is not allowed), got {name!r}")
    if any(p in ("", ".") for p in parts):
        raise ConfigError(path, f"must be a plain relative file name (no empty or '.' parts), got {name!r}")
    return name


# --- the library's checks -------------------------------------------------------------------
@contextmanager
def library_check(section: str, keys: dict | None = None):
    """Run a check of the library (rgdist.catalog: check_scheme_params, check_density, ...):
    its ParameterError becomes ConfigError at ``section.<key>`` (``keys`` renames the
    library's parameter names to the section's, e.g. method -> likelihood). The rule is coded
    once, in the library; the schema only names the key."""
    try:
        yield
    except ParameterError as exc:
        key = (keys or {}).get(exc.key, exc.key)
        raise ConfigError(join(section, key), exc.message) from None


# --- mappings ----------------------------------------------------------------------------------
def opt(default, rule):
    """A section field with its default and its validation rule."""
    return field(default=default, metadata={"rule": rule})


def mapping(raw, path) -> dict:
    """A mapping with string keys (a null section counts as empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(path, f"must be a mapping, got {got(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise ConfigError(join(path, key), f"keys must be strings, got {got(key)}")
    return raw


def reject_unknown(given: dict, allowed, path, hint=None) -> None:
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            extra = f" (did you mean {close[0]}?)" if close else ""
            extra += f" ({hint(key)})" if hint is not None and hint(key) else ""
            raise ConfigError(join(path, key), f"unknown key{extra}; allowed: {', '.join(allowed)}")


def owner_hint(table: dict, what: str):
    """A hint for reject_unknown: which other scheme/model has this parameter."""
    def hint(key):
        owners = [name for name, params in table.items() if key in params]
        return f"{key} is a parameter of {what} {', '.join(owners)}" if owners else None
    return hint


def require(given: dict, names, path) -> None:
    for name in names:
        if name not in given:
            raise ConfigError(join(path, name), "required key is missing")


def plain(value):
    """Tuples -> lists, recursively (for JSON)."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def later_defaults(out: dict, section) -> dict:
    """``out`` without the keys of ``section.LATER`` that are at their field defaults: keys
    added to the schema later are left out of ``to_dict`` (and so of the point ids) at their
    defaults, so existing ids stay valid."""
    defaults = {f.name: f.default for f in fields(section)}
    for key in section.LATER:
        if out[key] == defaults[key]:
            del out[key]
    return out


class Section:
    """Frozen dataclass section validated field by field from the ``rule`` metadata."""

    KEY: ClassVar[str] = ""
    LATER: ClassVar[tuple] = ()

    def __post_init__(self):
        for f in fields(self):
            rule = f.metadata.get("rule")
            if rule is not None:
                object.__setattr__(self, f.name, rule(getattr(self, f.name), f"{self.KEY}.{f.name}"))
        self._check()

    def _check(self) -> None:
        """Checks between fields of the section."""

    @classmethod
    def parse(cls, raw, path=None):
        path = path or cls.KEY
        given = mapping(raw, path)
        names = [f.name for f in fields(cls)]
        reject_unknown(given, names, path)
        return cls(**given)

    def to_dict(self) -> dict:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

"""The campaign files shipped with rgdist (package data: ``rgdist/campaigns/*.yaml``).

``rgdist run`` without a file runs :data:`DEFAULT`; ``rgdist campaigns`` lists them with the
first comment line of each file; ``rgdist campaigns --copy NAME`` puts one in the current
directory to edit.  In a checkout ``campaigns/`` is a link to this folder.
"""
from __future__ import annotations

import contextlib
import os
from importlib import resources
from pathlib import Path
from typing import Iterator

from rgdist.errors import ConfigError

DEFAULT = "default.yaml"
SUFFIX = ".yaml"


def _root():
    return resources.files(__name__)


def names() -> list[str]:
    """File names of the shipped campaigns, sorted (``default.yaml``, ...)."""
    return sorted(e.name for e in _root().iterdir() if e.name.endswith(SUFFIX) and e.is_file())


def file_name(name: str, key: str = "--copy") -> str:
    """``NAME`` or ``NAME.yaml`` of a shipped campaign -> its file name; ConfigError (naming
    ``key``) otherwise."""
    shipped = names()
    given = name if name.endswith(SUFFIX) else name + SUFFIX
    if os.path.basename(given) != given or given not in shipped:
        listing = ", ".join(n[: -len(SUFFIX)] for n in shipped)
        raise ConfigError(key, f"unknown campaign {name!r}; shipped: {listing}")
    return given


def read_text(name: str) -> str:
    return _root().joinpath(file_name(name)).read_text(encoding="utf-8")


def description(text: str) -> str:
    """The first comment line of a campaign file (``# ...``), without the ``#``."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
    return ""


def listing() -> list[tuple[str, str]]:
    """``[(file name, description)]`` of every shipped campaign."""
    return [(n, description(read_text(n))) for n in names()]


@contextlib.contextmanager
def as_file(name: str = DEFAULT) -> Iterator[Path]:
    """A file-system path of a shipped campaign for the duration of the ``with`` block."""
    with resources.as_file(_root().joinpath(file_name(name, "campaign"))) as path:
        yield Path(path)


def copy_to(name: str, directory: str | os.PathLike = ".") -> Path:
    """Write shipped campaign ``name`` into ``directory``; never overwrites (ConfigError)."""
    data = read_text(name).encode("utf-8")
    target = Path(directory) / file_name(name)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ConfigError("--copy", f"{target} already exists; nothing was overwritten "
                          "(remove or rename it, or copy in another directory)") from None
    except OSError as exc:
        raise ConfigError("--copy", f"cannot create {target} ({exc.strerror}); "
                          "copy in a writable directory") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        os.unlink(target)
        raise ConfigError("--copy", f"cannot write {target} ({exc.strerror}); nothing was kept") from None
    return target

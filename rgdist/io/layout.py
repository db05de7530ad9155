"""Names inside a results file across layout versions: readers speak layout 2 only.

Layout 2 renamed what layout 1 called "exact" (a word with four meanings):

=====================================  =====================================
layout 1                               layout 2
=====================================  =====================================
``points/<id>/flow/exact/...``         ``points/<id>/flow/forward/...``    (the forward RG flow)
``points/<id>/exact/...``              ``points/<id>/correct/...``         (the correction stage)
root attribute ``rgdist_layout = 1``   ``rgdist_layout = 2``
=====================================  =====================================

Everything else (``estimates``, ``acc_<source>``, ``flow/learned``, ``flow/gaussian``,
``flow/couplings/<learned|gaussian>``, ``flow/deviation``, ...) is unchanged.  A file without
``rgdist_layout`` is layout 1.  Readers open a file, take :func:`file_layout` of its root
attributes and pass every dataset path through :func:`to_current` (or, for the names below one
point, :func:`point_name`); nothing after that sees a layout-1 name.

Torch-free and h5py-free (plain strings), so the aggregate and status code can use it.
"""
from __future__ import annotations

from typing import Mapping

#: the root attribute that carries the layout version
LAYOUT_ATTR = "rgdist_layout"
#: the layout the readers speak
CURRENT_LAYOUT = 2
#: the flows a results file holds below ``points/<id>/flow/`` (layout 2 names)
FLOW_KINDS = ("forward", "learned", "gaussian")

_POINT_RENAMES_1 = {"exact": "correct"}            # first component below points/<id>/
_FLOW_RENAMES_1 = {"exact": "forward"}             # first component below points/<id>/flow/


def file_layout(attrs: Mapping) -> int:
    """The layout version of a file from its root attributes (absent: 1)."""
    return int(attrs.get(LAYOUT_ATTR, 1) or 1)


def point_name(name: str, layout: int) -> str:
    """The layout-2 name of ``name``, a path below ``points/<id>/`` of a file of ``layout``
    (e.g. ``flow/exact/t`` -> ``flow/forward/t``, ``exact/ess_fraction`` ->
    ``correct/ess_fraction`` for layout 1).  Names of layout >= 2 come back unchanged."""
    if int(layout) >= 2:
        return name
    head, sep, rest = name.partition("/")
    if head == "flow" and sep:
        kind, sep2, tail = rest.partition("/")
        return "flow/" + _FLOW_RENAMES_1.get(kind, kind) + sep2 + tail
    return _POINT_RENAMES_1.get(head, head) + sep + rest


def to_current(path: str, layout: int) -> str:
    """The layout-2 name of ``path`` (from the file root, with or without a leading ``/``) of a
    file of ``layout``: ``points/<id>/<name>`` -> ``points/<id>/`` + :func:`point_name`;
    attribute paths ``<path>@<attr>`` map their path part; other paths are unchanged."""
    if int(layout) >= 2:
        return path
    obj, at, attr = path.partition("@")
    lead = "/" if obj.startswith("/") else ""
    parts = obj.lstrip("/").split("/", 2)
    if len(parts) == 3 and parts[0] == "points":
        obj = f"{lead}points/{parts[1]}/{point_name(parts[2], layout)}"
    return obj + at + attr


def current_names(arrays: Mapping, layout: int, *, below_point: bool = True) -> dict:
    """``arrays`` ({name: value}) with every name mapped to layout 2 (names below one point with
    ``below_point``, else paths from the file root)."""
    rename = point_name if below_point else to_current
    return {rename(name, layout): value for name, value in arrays.items()}

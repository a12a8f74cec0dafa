"""Which code made the runs: ``results.json``'s ``provenance`` (package version, commit, dirty tree, library
versions), counted per distinct version so a report that mixes code versions says so.

A run without ``provenance`` (older runs) is counted as ``unrecorded``: it may or may not match the others,
so it makes the report's versions differ too. A run resumed under other code (``provenance_resumes``) is its
first version, marked "resumed under other code". The device is left out: it is no code version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from mopo_lightning.analysis.runs import Run

UNRECORDED = "unrecorded"


def _version(provenance: dict[str, Any] | None) -> tuple:
    """(version, commit[:10], dirty, resumed under other code, ((library, version), ...)); () when unrecorded."""
    if not provenance:
        return ()
    package = provenance.get("package") or {}
    commit = package.get("commit")
    libraries = tuple(sorted((str(k), str(v)) for k, v in (provenance.get("libraries") or {}).items()))
    return (package.get("version"), commit[:10] if commit else None, package.get("dirty"),
            bool(provenance.get("resumes")), libraries)


def label(version: tuple) -> str:
    """``mopo-lightning 0.1.0 (1a2b3c4d5e, dirty)`` or ``unrecorded``."""
    if not version:
        return UNRECORDED
    number, commit, dirty, resumed, _ = version
    state = {True: ", dirty", False: "", None: ", dirty unknown"}.get(dirty, "")
    tail = ", resumed under other code" if resumed else ""
    return f"mopo-lightning {number} ({commit or 'no commit'}{state}){tail}"


def code_versions(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """One entry per distinct code and library version, with how many runs it made (most runs first)."""
    counts = Counter(_version(r.provenance) for r in runs)
    return [{"code": label(v), "version": v[0] if v else None, "commit": v[1] if v else None,
             "dirty": v[2] if v else None, "libraries": dict(v[4]) if v else None, "runs": n}
            for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], label(kv[0])))]


def libraries(entry: dict[str, Any]) -> str:
    """``python 3.11.7, torch 2.5.1, ...`` or ``-``."""
    found = (entry["libraries"] or {}).items()
    return ", ".join(f"{k} {'not installed' if v == 'None' else v}" for k, v in found) or "-"


def warning(versions: list[dict[str, Any]]) -> str | None:
    """The one stderr line when the runs come from more than one code (or library) version, else None."""
    if len(versions) < 2:
        return None
    return (f"warning: runs come from {len(versions)} code versions (package and libraries): "
            + "; ".join(f"{e['code']}{f' [{libraries(e)}]' if e['libraries'] else ''} "
                        f"({e['runs']} run{'s' if e['runs'] != 1 else ''})" for e in versions))

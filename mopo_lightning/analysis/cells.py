"""What defines a cell of the report, in one place: the dataset a run read (its bytes) and its method.

- Every table, figure and aggregate keys its cells by ``Run.config``: the task, ``Run.data_key`` (the
  dataset's SHA-256 as stage 1 recorded it, whatever the path; the dataset string for older runs without
  one) and ``Run.method`` (``analysis/runs.py``). Nothing is keyed by a file's stem or a kind alone.
- Labels stay readable: a dataset is named by its file stem or its D4RL / Minari name, with a disambiguator
  only where two datasets would share that name: the parent folder where their paths differ, else the first
  8 hex digits of the SHA-256 (one path whose bytes changed), else the dataset string as written.
- ``unique`` refuses (``ValueError``, one line) where two keys would print as one label, so a dict keyed by a
  label can never merge two cells or let a later one overwrite an earlier one.
- ``notes`` say where a dataset's identity needs a word: a path whose bytes changed, one content read under
  several names, datasets identified by name only (no hash recorded).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mopo_lightning.analysis.runs import Run, method_label
from mopo_lightning.data.source import dataset_source

D4RL_ROWS = {"random": "random", "medium": "medium", "medium-replay": "mixed", "medium-expert": "medium-expert"}
"""D4RL dataset kinds and the paper's row names ("mixed" is D4RL's medium-replay)."""
VERSION = re.compile(r"v\d+")


def base_label(dataset: str) -> str:
    """A file's stem (``data/hopper-mixed.hdf5`` -> ``hopper-mixed``); a D4RL or Minari name as it is."""
    return Path(dataset).stem if dataset.endswith((".hdf5", ".h5")) else dataset


def d4rl_kind(dataset: str) -> str:
    """The paper's row name of a dataset: ``hopper-medium-replay-v2`` -> ``mixed``; ``hopper-rnd.hdf5`` -> ``rnd``;
    a Minari id's quality: ``mujoco/hopper/medium-v0`` -> ``medium``."""
    name = base_label(dataset).lower().replace("_", "-")
    words = [w for w in name.rsplit("/", 1)[-1].split("-") if not VERSION.fullmatch(w)]
    core = "-".join(words if "/" in name else words[1:])  # a Minari id's last part names no env
    return D4RL_ROWS.get(core, core or (words[0] if words else name))


@dataclass(frozen=True)
class Dataset:
    """One dataset as the runs read it: its content key, label, the names it was read under, and its source."""

    key: str
    label: str
    names: tuple[str, ...]
    sha256: str | None
    source: str
    """``d4rl`` (a D4RL name), ``minari`` (a Minari id or store) or ``file``."""

    @property
    def kind(self) -> str:
        return d4rl_kind(self.names[0])

    @property
    def version(self) -> str | None:
        """``v0``, ``v2``: a D4RL or Minari name's version (None for a file)."""
        found = re.search(r"-(v\d+)$", self.names[0]) if self.source != "file" else None
        return found.group(1) if found else None

    def as_dict(self, runs: int) -> dict[str, object]:
        return {"label": self.label, "key": self.key, "names": list(self.names), "sha256": self.sha256,
                "source": self.source, "kind": self.kind, "runs": runs}


def datasets(runs: Iterable[Run]) -> dict[str, Dataset]:
    """Every dataset the runs read, by ``Run.data_key``, each with a label no other dataset shares."""
    names: dict[str, set[str]] = {}
    first: dict[str, Run] = {}
    for run in runs:
        names.setdefault(run.data_key, set()).add(run.dataset)
        first.setdefault(run.data_key, run)
    found = {key: Dataset(key, base_label(min(ns)), tuple(sorted(ns)), first[key].sha256, _source(first[key]))
             for key, ns in names.items()}
    by_label: dict[str, list[Dataset]] = {}
    for data in found.values():
        by_label.setdefault(data.label, []).append(data)
    for label, group in by_label.items():
        if len(group) > 1:
            for data, new in zip(group, _disambiguated(label, group), strict=True):
                found[data.key] = Dataset(data.key, new, data.names, data.sha256, data.source)
    return dict(sorted(found.items(), key=lambda kv: kv[1].label))


def _source(run: Run) -> str:
    return "minari" if str(run.score_reference).startswith("minari:") else dataset_source(run.dataset)


def _disambiguated(label: str, group: list[Dataset]) -> list[str]:
    """Labels for datasets that share ``label``: the first tag that tells them all apart."""
    tags: list[Callable[[Dataset], str]] = [
        lambda d: str(Path(Path(d.names[0]).parent.name) / label) if Path(d.names[0]).parent.name else label,
        lambda d: f"{label}@{d.sha256[:8]}" if d.sha256 else f"{label} (no hash)",
        lambda d: d.names[0] if d.sha256 is None else f"{d.names[0]}@{d.sha256[:8]}",
    ]
    for tag in tags:
        labels = [tag(d) for d in group]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{label} ({d.key})" for d in group]  # keys differ by construction


def notes(data: Mapping[str, Dataset]) -> list[str]:
    """One line per dataset fact a reader must know: changed bytes, one content under several names, no hash."""
    lines = []
    by_name: dict[str, list[Dataset]] = {}
    for d in data.values():
        for name in d.names:
            by_name.setdefault(name, []).append(d)
        if len(d.names) > 1:
            lines.append(f"dataset {d.label}: the same bytes (SHA-256 {d.sha256[:12] if d.sha256 else '-'}) were "
                         f"read as {', '.join(d.names)}: one dataset")
    for name, group in sorted(by_name.items()):
        if len(group) > 1:
            lines.append(f"dataset {name}: its bytes changed between runs (or some runs recorded no hash): "
                         f"{len(group)} datasets, {', '.join(d.label for d in group)}")
    unhashed = [d.label for d in data.values() if d.sha256 is None]
    if unhashed:
        lines.append(f"identified by name only (no SHA-256 recorded: runs older than the data's hash): "
                     f"{', '.join(unhashed)}")
    return lines


def config_label(config: tuple, data: Mapping[str, Dataset]) -> str:
    """``hopper hopper-medium-replay-v2 MOPO``: task, dataset label, method label."""
    task, key, method = config
    return f"{task} {data[key].label} {method_label(method)}"


def grid_key(config: tuple, data: Mapping[str, Dataset]) -> str | None:
    """The h x lambda heat map a configuration belongs to: everything of its cell but h and lambda (None for a
    named arm: one method, not a grid). Two values of any other key (``mopo.real_ratio``) are two maps."""
    task, key, method = config
    if not method or isinstance(method[0], str):
        return None
    _, _, kind, *rest = method
    return " ".join([task, data[key].label, kind or "", *(f"{k}={v}" for k, v in rest)]).strip()


def unique(labels: Mapping[Hashable, str], what: str) -> dict[Hashable, str]:
    """``labels`` itself when no two keys share a label; else one ``ValueError`` line naming them."""
    seen: dict[str, Hashable] = {}
    for key, label in labels.items():
        if label in seen and seen[label] != key:
            raise ValueError(f"two {what} would print as {label!r}: the report refuses rather than merge them "
                             "(a --method arm named like another method?)")
        seen[label] = key
    return dict(labels)

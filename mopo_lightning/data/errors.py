"""The errors every dataset source raises, so a caller catches one type whatever the source.

Each message is one line naming the file (or id) and the fault: it is printed as is by the CLI.
"""

from __future__ import annotations

from mopo_lightning.guards import UnknownName


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and the fault."""


class DatasetDownloadError(DatasetError):
    """A dataset that is neither on disk nor downloadable (offline, bad URL or id, cut transfer)."""


class UnknownDataset(UnknownName, DatasetError):
    """A dataset name no source knows (a D4RL name, a Minari id of an env this project cannot use): a usage
    error (``guards.UnknownName``, exit 2) that callers of a dataset source may catch as a ``DatasetError``."""


def one_line(err: BaseException) -> str:
    """``err``'s text on one line, since library errors (h5py, Minari) span several."""
    return " ".join(str(err).split())

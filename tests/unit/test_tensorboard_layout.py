"""TensorBoard's "is it learning" layout: written by a fit, read back from the event files."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata

from mopo_lightning.callbacks.tensorboard_layout import (
    CATEGORY,
    HOLDOUT_MSE,
    PENALTY,
    RETURN,
    SCORE,
    TensorBoardLayout,
)

PACKAGE = Path(__file__).resolve().parents[2] / "mopo_lightning"


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def written_layout(tmp_path: Path, task: str) -> layout_pb2.Layout:
    """Fit a tiny module with the callback and read the layout back as TensorBoard's plugin would."""
    logger = TensorBoardLogger(tmp_path, name="tensorboard", version="sac", default_hp_metric=False)
    trainer = L.Trainer(max_epochs=1, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[TensorBoardLayout(task)])
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    trainer.fit(Tiny(), data)
    events = EventAccumulator(str(tmp_path / "tensorboard" / "sac"))
    events.Reload()
    assert metadata.CONFIG_SUMMARY_TAG in events.Tags()["tensors"]
    (event,) = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
    return layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])


def charts(layout: layout_pb2.Layout) -> list[list[str]]:
    (category,) = layout.category
    assert category.title == CATEGORY
    return [list(chart.multiline.tag) for chart in category.chart]


@pytest.mark.parametrize(("task", "score"), [("hopper", SCORE), ("halfcheetah-jump", RETURN)])
def test_the_layout_is_score_model_error_and_penalty(tmp_path, task, score):
    """A D4RL task charts its normalised score first; a variant without reference scores its return."""
    assert charts(written_layout(tmp_path, task)) == [[f"^{score}$"], [f"^{HOLDOUT_MSE}$"], [f"^{PENALTY}$"]]


def test_the_charted_tags_are_logged_by_the_package():
    """A renamed log key would leave an empty chart: each charted tag is spelled where it is logged."""
    sources = {path: path.read_text() for path in PACKAGE.rglob("*.py") if path.name != "tensorboard_layout.py"}
    for tag in (SCORE, RETURN, HOLDOUT_MSE, PENALTY):
        assert any(f'"{tag}"' in text for text in sources.values()), tag

"""The stage progress bar: stage name and real totals, no v_num, no per-epoch validation bar."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from mopo_lightning.callbacks.progress_bar import StageProgressBar


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("holdout", self.layer(batch[0]).sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, max_epochs: int) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = L.Trainer(max_epochs=max_epochs, logger=CSVLogger(tmp_path, version="mics"), num_sanity_val_steps=0,
                        enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[StageProgressBar("stage 1 (dynamics)")])
    trainer.fit(Tiny(), data, data)


def test_bar_names_the_stage_and_total_without_version_or_validation_bar(tmp_path, capfd):
    _fit(tmp_path, 2)
    captured = capfd.readouterr()
    err = captured.out + captured.err  # tqdm writes to stdout in Lightning 2
    assert "stage 1 (dynamics) epoch 2/2" in err
    assert "Validation" not in err and "v_num" not in err


def test_bar_without_an_epoch_cap_shows_the_epoch_alone(tmp_path, capfd, monkeypatch):
    calls = {"n": 0}

    def stop_after_two(self, *args):  # an uncapped stage stops itself (early stopping)
        calls["n"] += 1
        if calls["n"] == 2:
            self.trainer.should_stop = True

    monkeypatch.setattr(Tiny, "on_train_epoch_end", stop_after_two, raising=False)
    _fit(tmp_path, -1)
    captured = capfd.readouterr()
    err = captured.out + captured.err  # tqdm writes to stdout in Lightning 2
    assert "stage 1 (dynamics) epoch 2:" in err and "/-" not in err


def test_a_log_file_gets_one_labelled_redraw_per_refresh(tmp_path, capfd):
    """Not a terminal (CI logs, nohup): every redraw stays, so Lightning's own labels and double redraws show."""
    _fit(tmp_path, 2)
    captured = capfd.readouterr()
    lines = [line for line in (captured.out + captured.err).replace("\r", "\n").splitlines() if "it/s" in line]
    assert not [line for line in lines if line.startswith(("Epoch", "Training"))]
    # two batches per epoch at refresh 1: "0/2" (the epoch's start), "1/2", then one "2/2" with the epoch's final
    # metrics (Lightning drew it three times, four in the last epoch: batch end, holdout end, epoch end, close)
    for epoch in ("epoch 1/2", "epoch 2/2"):
        counts = [line.split("|")[2].split("[")[0].strip() for line in lines if epoch in line]
        assert counts == ["0/2", "1/2", "2/2"], (epoch, counts)
    assert not [line for line in lines if "0/?" in line]  # no unlabelled draw when the bar is made


class Counting(Tiny):
    def training_step(self, batch, batch_idx):
        self.log("updates", 2000.0, prog_bar=True, logger=False)  # as SACModule logs its update count
        self.log("score", 2.5, prog_bar=True, logger=False)
        return super().training_step(batch, batch_idx)


def test_whole_number_metrics_show_as_integers(tmp_path, capfd):
    """tqdm formats the float 2000.0 as ``2e+3``; the bar shows the SAC update count as ``2000``."""
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[StageProgressBar("stage 2 (SAC)")])
    trainer.fit(Counting(), data)
    captured = capfd.readouterr()
    out = captured.out + captured.err
    assert "updates=2000" in out and "2e+3" not in out and "score=2.5" in out

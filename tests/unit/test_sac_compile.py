"""``SACModule(compile=True)``: the loss terms compile with fullgraph (no graph break, no recompile) and
train like eager within float tolerance. Inductor on CPU (gcc): ~30 s with a cold compile cache on a
busy 2-core machine, ~3 s warm."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from conftest import random_sac_batches
from tensordict import TensorDict

from mopo_lightning.policy.sac import LOG_KEYS, SACModule

OBS, A, B = 3, 2, 32


def batches(n: int) -> list[TensorDict]:
    return random_sac_batches(n, OBS, A, B)


def train(compile: bool, data: list[TensorDict]) -> tuple[SACModule, list[TensorDict]]:
    torch.manual_seed(0)
    sac = SACModule(OBS, A, hidden_dim=16, compile=compile)
    return sac, [sac.update(b) for b in data]


@pytest.mark.slow
def test_compiled_losses_are_one_graph_each_and_match_eager():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    data = batches(4)
    # fallback_random: inductor draws the actor's noise with eager's generator, so both runs see the same
    # samples; error_on_recompile: a guard that fails on the second update would raise
    same_noise = torch._inductor.config.patch(fallback_random=True)
    with same_noise, torch._dynamo.config.patch(error_on_recompile=True):
        compiled, compiled_out = train(True, data)
    eager, eager_out = train(False, data)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 3  # loss_qvalue, loss_actor, loss_alpha
    assert not torch._dynamo.utils.counters["graph_break"]
    for out_c, out_e in zip(compiled_out, eager_out, strict=True):
        for key in LOG_KEYS:
            torch.testing.assert_close(out_c[key], out_e[key], rtol=1e-5, atol=1e-5)
    for (name, p_c), p_e in zip(compiled.state_dict().items(), eager.state_dict().values(), strict=True):
        torch.testing.assert_close(p_c, p_e, rtol=1e-5, atol=1e-5, msg=name)
    assert compiled.sac_updates.item() == 4

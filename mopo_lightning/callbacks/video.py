"""Evaluation videos: one deterministic episode rendered off-screen by MuJoCo.

TensorBoard's public API shows an animated image only through ``SummaryWriter.add_video``, which needs an
old moviepy (``moviepy.editor``, gone in moviepy 2). So the animated GIF (Pillow) is a file beside the
TensorBoard logs, and TensorBoard gets a strip of its frames (``add_images``) at the same step.
Off-screen rendering needs an OpenGL backend: gymnasium tries EGL, GLFW and OSMesa unless
``MUJOCO_GL`` names one.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mopo_lightning.envs.tasks import Task
from mopo_lightning.envs.wrappers import make_env
from mopo_lightning.files import write_bytes_atomic

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

VIDEO_DIR = "videos"
"""Subdirectory of the TensorBoard log directory holding the GIFs (``<tag>_<step>.gif``)."""
STRIP_FRAMES = 8
"""Frames of the TensorBoard strip (evenly spaced over the episode): one row of ``add_images``' grid."""


@torch.no_grad()
def render_episode(
    task: Task,
    act: Callable[[Tensor], Tensor],
    seed: int,
    max_episode_steps: int = 1000,
    size: int = 128,
    frame_skip: int = 2,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Frames [T, H, W, 3] (uint8) of one episode, every ``frame_skip``-th step."""
    env = make_env(task, render_mode="rgb_array", width=size, height=size, max_episode_steps=max_episode_steps)
    try:
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
        for t in range(max_episode_steps):
            action = act(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0].cpu().numpy()
            obs, _, terminated, truncated, _ = env.step(action)
            if (t + 1) % frame_skip == 0:
                frames.append(env.render())
            if terminated or truncated:
                break
    finally:
        env.close()
    return np.stack(frames)


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """Animated GIF of frames [T, H, W, 3] uint8, looping."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(1, int(1000 / fps)), loop=0)
    return buffer.getvalue()


def log_video(writer: SummaryWriter, tag: str, frames: np.ndarray, step: int, fps: float = 25.0) -> Path:
    """Write frames [T, H, W, 3] uint8 as ``<logdir>/videos/<tag>_<step>.gif`` and as a strip under ``tag``.

    Returns the GIF's path (written atomically: a kill never leaves half a GIF).
    """
    path = Path(writer.get_logdir()) / VIDEO_DIR / f"{tag.replace('/', '_')}_{step:08d}.gif"
    write_bytes_atomic(path, gif_bytes(frames, fps))
    pick = np.linspace(0, len(frames) - 1, min(len(frames), STRIP_FRAMES)).round().astype(int)
    writer.add_images(tag, frames[pick], step, dataformats="NHWC")
    return path

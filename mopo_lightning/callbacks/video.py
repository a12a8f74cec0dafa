"""Evaluation videos for TensorBoard: one deterministic episode rendered off-screen by MuJoCo.

Frames are encoded as an animated GIF (Pillow) and written as a TensorBoard image summary, which is
what ``SummaryWriter.add_video`` does too, minus its dependency on an old moviepy.
Off-screen rendering needs an OpenGL backend: gymnasium tries EGL, GLFW and OSMesa unless
``MUJOCO_GL`` names one.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from mopo_lightning.envs.wrappers import make_env
from mopo_lightning.tasks import Task


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


def log_gif(writer, tag: str, frames: np.ndarray, step: int, fps: float = 25.0) -> None:
    """Write frames as an animated image summary on a ``torch.utils.tensorboard.SummaryWriter``."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    _, height, width, channels = frames.shape
    image = Summary.Image(height=height, width=width, colorspace=channels,
                          encoded_image_string=gif_bytes(frames, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

"""Torch datasets and loaders for the generated RS datasets (the original's ``utils/loaders.py``).

Images are scaled to [0, 1] and normalised with the original's constants (mean 0.0607, std 0.2161).

* ``extra_scaling = e != 1`` (train only; ``e > 1`` is inverted first) adds the original's augmentation
  ``RandomAffine([-180, 180], scale=(e, 1/e), bicubic)`` on the uint8 image.
* ``eval_blur=True`` reproduces the original's val/test quirk: a Gaussian blur with kernel 5 wide × 9
  tall, σ ~ U(0.1, 5) per image (same σ on both axes), reflect padding, applied after normalisation.
  Off by default (it makes the reported accuracy stochastic and was not in the paper's protocol).

Every random draw is seeded: the draws for item ``i`` in epoch ``e`` come from
``numpy.random.default_rng([seed, e, i])``, so results do not depend on worker count or on resuming.
Call :meth:`RSDataset.set_epoch` before each epoch.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .generate import load_split
from .warp import affine_warp

MEAN, STD = 0.0607, 0.2161
BACKGROUND = -MEAN / STD  # a zero pixel after normalisation
BLUR_KERNEL = (5, 9)  # (width, height), as torchvision's GaussianBlur(kernel_size=(5, 9))
BLUR_SIGMA = (0.1, 5.0)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``[C, H, W]`` with a BLUR_KERNEL Gaussian (same σ on both axes), reflect padding."""
    kernels = []
    for size in BLUR_KERNEL:
        x = torch.linspace(-(size // 2), size // 2, size, dtype=image.dtype)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
        kernels.append(k / k.sum())
    kx, ky = kernels
    weight = (ky[:, None] * kx[None, :]).expand(image.shape[0], 1, -1, -1)
    pad = (BLUR_KERNEL[0] // 2, BLUR_KERNEL[0] // 2, BLUR_KERNEL[1] // 2, BLUR_KERNEL[1] // 2)
    padded = F.pad(image[None], pad, mode="reflect")
    return F.conv2d(padded, weight, groups=image.shape[0])[0]


class RSDataset(Dataset):
    """Items ``(image [1, 28, 28] float32 normalised, label int)`` from uint8 ``images [N, 28, 28]``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, extra_scaling: float = 1.0,
                 eval_blur: bool = False, seed: int = 0):
        if extra_scaling <= 0:
            raise ValueError(f"extra_scaling: expected a positive float, got {extra_scaling}")
        self.images = np.ascontiguousarray(images)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        low = min(extra_scaling, 1.0 / extra_scaling)
        self.scale_range = None if extra_scaling == 1 else (low, 1.0 / low)
        self.eval_blur = eval_blur
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        rng = (np.random.default_rng([self.seed, self.epoch, index])
               if self.scale_range or self.eval_blur else None)
        if self.scale_range:
            angle, scale = rng.uniform(-180.0, 180.0), rng.uniform(*self.scale_range)
            image = affine_warp(image[None], angle, scale)[0]
        x = normalize(image)[None]
        if self.eval_blur:
            x = gaussian_blur(x, float(rng.uniform(*BLUR_SIGMA)))
        return x, self.labels[index]


def normalize(images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (any shape, e.g. ``[N, 28, 28]``) -> ``(images / 255 - MEAN) / STD`` in ``dtype``."""
    return (torch.from_numpy(np.asarray(images)).to(dtype) / 255.0 - MEAN) / STD


def rs_datasets(folder, extra_scaling: float = 1.0, eval_blur: bool = False, seed: int = 0):
    """``{"train", "val", "test"}`` -> :class:`RSDataset` of a generated dataset folder."""
    return {split: RSDataset(*load_split(folder, split),
                             extra_scaling=extra_scaling if split == "train" else 1.0,
                             eval_blur=eval_blur and split != "train", seed=seed)
            for split in ("train", "val", "test")}


def make_loader(dataset: RSDataset, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0,
                num_workers: int = 0, sampler=None, pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose shuffle order is a function of ``(seed, epoch)`` only."""
    dataset.set_epoch(epoch)
    generator: Optional[torch.Generator] = None
    if shuffle and sampler is None:
        generator = torch.Generator().manual_seed(seed * 100003 + epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, generator=generator, num_workers=num_workers,
                      pin_memory=pin_memory)

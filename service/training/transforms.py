"""The per-item transforms of the datasets (torchvision v2 where a step needs it, imported
there): channel adaptation, augmentation (crop, flip, jitter, AlexNet's PCA lighting) and
normalisation, and `Standardise`, torch alone, for items that need nothing else."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from service.config.data import AugmentConfig

_GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # the weights v2.Grayscale uses


class Lighting(nn.Module):
    """AlexNet's PCA colour noise: add `eigvec @ (alpha * eigval)`, alpha ~ N(0, sigma), per image.

    Works on (C, H, W) or a batch (N, C, H, W) of images in [0, 1] (before normalisation); the
    same C-vector is added to every pixel of an image. With C == 1 this is a random brightness
    shift scaled by the pixel variance, which is what PCA on one channel reduces to.
    """

    def __init__(self, eigval: torch.Tensor, eigvec: torch.Tensor, sigma: float) -> None:
        super().__init__()
        self.register_buffer("eigval", eigval.detach().float().clone())
        self.register_buffer("eigvec", eigvec.detach().float().clone())
        self.sigma = float(sigma)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Return `img` shifted by one random colour offset per image (identity if sigma == 0)."""
        if self.sigma == 0.0:
            return img
        lead = img.shape[:-3]
        alpha = torch.randn(*lead, self.eigval.numel()) * self.sigma
        offset = (alpha * self.eigval) @ self.eigvec.T  # row-vector form of eigvec @ (a*l)
        return img + offset.to(img.dtype)[..., :, None, None]

    def extra_repr(self) -> str:  # shows up when a run logs its transforms
        return f"sigma={self.sigma}, eigval={self.eigval.tolist()}"


def pca_lighting_basis(
    images: torch.Tensor, max_pixels: int = 1_000_000
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of the pixel colours of `images` (N, C, H, W), uint8 or float in [0, 1].

    Returns `(eigval, eigvec)`: eigenvalues of the C x C colour covariance, >= 0 and sorted in
    decreasing order, and the matching orthonormal eigenvectors as the COLUMNS of `eigvec`.
    Pass training images, before normalisation; at most `max_pixels` (evenly strided) are used.
    """
    c = images.shape[-3]
    pixels = images.movedim(-3, -1).reshape(-1, c)
    pixels = pixels[:: max(1, len(pixels) // max_pixels)].double()  # bound the cost at 224 px
    cov = torch.cov((pixels / 255.0 if images.dtype == torch.uint8 else pixels).T).reshape(c, c)
    eigval, eigvec = torch.linalg.eigh(cov)  # ascending
    eigval, eigvec = eigval.flip(0).clamp_min(0.0), eigvec.flip(1)
    # Fix each vector's sign (largest component positive) so the basis is reproducible.
    signs = torch.sign(eigvec.gather(0, eigvec.abs().argmax(0, keepdim=True)))
    eigvec = eigvec * torch.where(signs == 0, 1.0, signs)
    return eigval.float(), eigvec.float()


class Standardise:
    """`(x - mean) / std` per channel after repeating a grey channel to `channels`: what
    `compose` builds from v2.RGB and v2.Normalize, for items that need nothing else, with torch
    alone. The digits without augmentation use it, so that a trial's new worker process does
    not import torchvision (1.2 s of CPU per process, docs/performance.md)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> None:
        self.mean_tuple, self.std_tuple, self.channels = tuple(mean), tuple(std), channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] != self.channels:
            x = x.expand(*x.shape[:-3], self.channels, *x.shape[-2:])
        return x.sub(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"Standardise(mean={self.mean_tuple}, std={self.std_tuple})"


def augments(aug: AugmentConfig) -> bool:
    """Whether `aug` changes any training image."""
    return aug.crop != "none" or aug.hflip or aug.color_jitter > 0 or aug.lighting > 0


def adapt_stats(stats: tuple, in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std for the produced channels. RGB->grey uses the grey weights for the std too,
    exact when the channels are perfectly correlated and a close upper bound for real photos."""
    mean, std = stats
    if len(mean) == in_channels:
        return tuple(mean), tuple(std)
    if in_channels == 3:
        return mean * 3, std * 3
    grey = (tuple([sum(w * v for w, v in zip(_GREY_WEIGHTS, s, strict=True))]) for s in stats)
    return next(grey), next(grey)


def channel_step(native: int, in_channels: int) -> list[nn.Module]:
    from torchvision.transforms import v2  # torchvision only where a transform needs it

    # v2.RGB repeats a grey channel; v2.Grayscale(1) uses the ITU-R 601 weights
    return {(1, 3): [v2.RGB()], (3, 1): [v2.Grayscale(1)]}.get((native, in_channels), [])


def augment_steps(aug: AugmentConfig, size: int, lighting: Lighting | None) -> list[nn.Module]:
    from torchvision.transforms import v2

    # geometry first, then photometric noise; Lighting last, on [0, 1] values as in AlexNet
    steps: list[nn.Module] = {
        "none": [], "random": [v2.RandomCrop(size, padding=aug.crop_padding)],
        "random_resized": [v2.RandomResizedCrop(size, (aug.crop_scale_min, 1.0), antialias=True)],
    }[aug.crop]
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if aug.color_jitter > 0:
        s = aug.color_jitter
        steps.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s))
    if lighting is not None:
        steps.append(lighting)
    return steps


def compose(pre: list[nn.Module], aug: list[nn.Module], stats: tuple) -> Any:
    from torchvision.transforms import v2

    return v2.Compose([*pre, *aug, v2.Normalize(*stats), v2.ToPureTensor()])

"""Image-quality metrics computed on the device: PSNR (peak 1), SSIM (skimage's definition), LPIPS-Alex v0.1.

Predictions are clamped to [0, 1] before every metric. LPIPS takes [-1, 1] inputs: by default each image is
min-max normalised to that range, as the NINT release computes it (`--lpips-norm minmax`); `fixed` maps
[0, 1] linearly, which is how runs stored before the option computed it. LPIPS needs torchvision's AlexNet backbone, which is a
download: offline it is loaded from a local file or LPIPS is recorded as null (never from a random backbone).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import BenchError

LPIPS_WEIGHTS_ENV = "NINT_BENCH_LPIPS_WEIGHTS"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet ImageNet weights


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.clamp(0.0, 1.0) - target).pow(2).mean()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB with peak 1 of the clamped prediction; a 0-dim tensor (no host sync)."""
    return -10.0 * torch.log10(mse(pred, target))


def ssim(pred_img: torch.Tensor, target_img: torch.Tensor, win_size: int = 7) -> torch.Tensor:
    """Mean SSIM of (H, W, C) images in [0, 1], equal to
    ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1)``: 7×7 uniform window,
    sample covariance, K1 0.01, K2 0.03, mean over the valid (uncropped) region and over channels."""
    x = pred_img.clamp(0.0, 1.0).permute(2, 0, 1).unsqueeze(0).double()
    y = target_img.permute(2, 0, 1).unsqueeze(0).double()
    if min(x.shape[-2:]) < win_size:
        raise BenchError(f"SSIM needs images of at least {win_size}×{win_size} pixels, got {tuple(x.shape[-2:])}")
    np_ = win_size * win_size
    cov_norm = np_ / (np_ - 1)
    pool = lambda t: F.avg_pool2d(t, win_size, stride=1)  # noqa: E731  (valid region = skimage's crop)
    ux, uy = pool(x), pool(y)
    uxx, uyy, uxy = pool(x * x), pool(y * y), pool(x * y)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean().float()


def find_lpips_weights(path: str | os.PathLike | None = None) -> Path | None:
    """The AlexNet backbone file: an explicit path (must exist), else $NINT_BENCH_LPIPS_WEIGHTS, else torch's
    hub cache. None when none is found."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise BenchError(
                f"LPIPS backbone weights not found at {p}; give the path of torchvision's {ALEXNET_FILE} "
                "or run with --no-lpips"
            )
        return p
    env = os.environ.get(LPIPS_WEIGHTS_ENV)
    if env:
        return find_lpips_weights(env)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    return cached if cached.is_file() else None


def lpips_unavailable_notice() -> str:
    return (
        f"notice: LPIPS recorded as null: AlexNet backbone weights ({ALEXNET_FILE}) are not available offline; "
        f"pass --lpips-weights PATH or set {LPIPS_WEIGHTS_ENV} to compute it"
    )


class Lpips:
    """LPIPS-Alex v0.1 (the `lpips` package's linear heads) with the backbone loaded from a local file.

    `random_backbone=True` is for tests of the code path only: its numbers are not LPIPS.
    """

    def __init__(self, weights: Path | None, device: torch.device | str = "cpu", random_backbone: bool = False):
        import lpips  # imported lazily: it pulls in torchvision

        if weights is None and not random_backbone:
            raise BenchError(lpips_unavailable_notice().removeprefix("notice: "))
        with warnings.catch_warnings():  # torchvision's deprecation notes about `pretrained`
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
        if weights is not None:
            self._load_backbone(weights)
        self.model = self.model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _load_backbone(self, weights: Path) -> None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line message
            raise BenchError(f"cannot read LPIPS backbone weights {weights}: {exc}") from None
        net = self.model.net
        mapped = {}
        for key in net.state_dict():
            _, index, leaf = key.split(".")  # sliceK.<features index>.weight
            src = f"features.{index}.{leaf}"
            if src not in state:
                raise BenchError(f"{weights} is not torchvision's AlexNet state dict (missing {src})")
            mapped[key] = state[src]
        net.load_state_dict(mapped)

    @torch.no_grad()
    def __call__(self, pred_img: torch.Tensor, target_img: torch.Tensor, norm: str = "minmax") -> torch.Tensor:
        """LPIPS of two (H, W, 3) images in [0, 1] (the prediction clamped first), mapped to the network's
        [-1, 1] input by `norm`: "minmax" (each image by its own minimum and maximum, as the NINT release)
        or "fixed" (x·2 − 1)."""
        to_input = lpips_input if norm == "minmax" else (lambda x: x * 2.0 - 1.0)
        a = to_input(pred_img.clamp(0.0, 1.0)).permute(2, 0, 1).unsqueeze(0)
        b = to_input(target_img).permute(2, 0, 1).unsqueeze(0)
        return self.model(a.float(), b.float()).reshape(())


def lpips_input(img: torch.Tensor) -> torch.Tensor:
    """An image min-max normalised to [-1, 1] over all its pixels and channels (a constant image maps to 0)."""
    lo, hi = img.min(), img.max()
    return (img - lo) / (hi - lo).clamp_min(torch.finfo(img.dtype).tiny) * 2.0 - 1.0


_NOTICED: list[bool] = []  # the offline notice is printed once per process


def make_lpips(mode: str, weights_path: str | None, device) -> Lpips | None:
    """mode "off": None. "auto": LPIPS if the backbone is found, else None with a one-line notice on stderr.
    "on": LPIPS or a BenchError saying how to provide the backbone."""
    if mode == "off":
        return None
    weights = find_lpips_weights(weights_path)
    if weights is None:
        if mode == "on":
            raise BenchError(lpips_unavailable_notice().removeprefix("notice: "))
        if not _NOTICED:
            print(lpips_unavailable_notice(), file=sys.stderr)
            _NOTICED.append(True)
        return None
    return Lpips(weights, device)

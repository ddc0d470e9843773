"""Image suites: `kodak` (downloaded and verified, or a local copy), `div2k16` (local), `builtin` (shipped with
scikit-image, the offline default), or any folder / single image file given as the suite name.

Every image is read as 8- or 16-bit RGB and checked; a bad file is a one-line BenchError. Its header is read
first: an image of more than `max_pixels` pixels (--max-pixels) is refused before it is decoded, so a small
file that claims a huge size (a decompression bomb) costs nothing; this check stands in for Pillow's own limit. A JPEG that --max-size will shrink at least
twofold is decoded at reduced scale (libjpeg's DCT scaling, 1/2 to 1/8, through Pillow's `draft`), never at
full size; other formats are decoded at full size and then downscaled. Image ids are file stems, so a folder
holding two images of one stem (x.png and x.jpg) is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmark.errors import BenchError
from benchmark.interrupt import signals_deferred

HERE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")
KODAK_URL = "https://r0k.us/graphics/kodak/kodak/{name}"
CACHE_ENV = "NINT_BENCH_CACHE"
MAX_PIXELS = 100_000_000  # default --max-pixels: a 10000 × 10000 image (300 MB as 8-bit RGB)
DECODER_MAX_PIXELS = 2**30  # OpenCV's own limit (CV_IO_MAX_IMAGE_PIXELS): --max-pixels cannot go above it
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True)
class ImageRef:
    """A named image: a file, or a loader for images that ship inside a package."""

    id: str
    path: Path | None = None
    loader: Callable[[], np.ndarray] | None = None
    sha256: str | None = None  # expected file checksum, verified on load
    max_size: int = 0  # the run's --max-size: lets a JPEG be decoded at reduced scale
    max_pixels: int = MAX_PIXELS  # larger images are refused before they are decoded

    def read(self, convert_rgb: bool = False) -> np.ndarray:
        if self.loader is not None:
            # skimage's reader (imageio) leaves a half-made plugin that prints a traceback at exit when Ctrl-C
            # lands inside it: the signal waits for the read, which takes milliseconds
            with signals_deferred():
                arr = self.loader()
            if arr.shape[0] * arr.shape[1] > self.max_pixels:
                raise BenchError(f"image {self.id} is {arr.shape[1]}×{arr.shape[0]} pixels, more than --max-pixels "
                                 f"{self.max_pixels}; pass --max-pixels {arr.shape[0] * arr.shape[1]} to read it")
            return check_rgb(arr, self.id, convert_rgb)
        return load_image(self.path, convert_rgb, self.sha256, self.max_size, self.max_pixels)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_max_pixels(max_pixels: Any) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or not 1 <= max_pixels <= DECODER_MAX_PIXELS:
        raise BenchError(f"--max-pixels must be a whole number in [1, {DECODER_MAX_PIXELS}] (the decoder reads at "
                         f"most 2**30 pixels), got {max_pixels!r}")


def _open_header(path: Path):
    """Pillow's lazy image (header parsed, pixels not decoded), or None if Pillow does not know the format.
    Pillow's own decompression-bomb limit (a warning, then an error with a traceback) is lifted for this one
    open, and its global setting left as it was: load_image checks the size against --max-pixels itself."""
    from PIL import Image, UnidentifiedImageError

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _draft_scale(im, max_size: int) -> bool:
    """Ask a JPEG for DCT-scaled decoding so that its longest side stays >= max_size; True if it shrinks."""
    w, h = im.size
    if im.format != "JPEG" or max_size <= 0 or max(w, h) < 2 * max_size or im.mode not in ("RGB", "L"):
        return False
    scale = max_size / max(w, h)
    im.draft(im.mode, (math.ceil(w * scale), math.ceil(h * scale)))
    return im.size != (w, h)


def load_image(path: Path | str, convert_rgb: bool = False, sha256: str | None = None, max_size: int = 0,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 or uint16 array; BenchError naming the file on any problem. Sizes above `max_pixels`
    are refused from the header; a JPEG that `max_size` will shrink is decoded at reduced scale (module
    docstring); the result is not yet resized to `max_size` (resize_longest does that)."""
    import cv2

    check_max_pixels(max_pixels)

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"image not found: {path}; check the path or --data-dir")
    if sha256 is not None:
        got = file_sha256(path)
        if got != sha256:
            raise BenchError(
                f"checksum mismatch for {path}: expected {sha256[:12]}…, got {got[:12]}…; "
                "the file is corrupt or a different image: delete it and download it again"
            )
    header = _open_header(path)
    if header is not None:
        with header:
            full = header.size
            drafted = path.suffix.lower() in JPEG_SUFFIXES and _draft_scale(header, max_size)
            w, h = header.size
            if w * h > max_pixels:
                what = f"{w}×{h} pixels" + (f" even decoded at reduced scale (full size {full[0]}×{full[1]})"
                                            if drafted else "")
                fix = (f"pass --max-pixels {w * h}" + (" or a smaller --max-size" if drafted else
                                                       " if it really is that large")
                       if w * h <= DECODER_MAX_PIXELS else
                       f"that is beyond what the decoder reads ({DECODER_MAX_PIXELS} pixels), so downscale the file "
                       "first" + (" or lower --max-size" if drafted else ""))
                raise BenchError(f"image {path} is {what}, more than --max-pixels {max_pixels}; {fix}")
            if drafted:
                try:
                    return check_rgb(np.asarray(header), str(path), convert_rgb)
                except OSError:
                    raise BenchError(f"cannot read image {path}: the file is truncated, corrupt or not an image; "
                                     "is it a complete, valid image file?") from None
    # OpenCV keeps 16-bit RGB (Pillow silently reduces it to 8 bits); it returns None for what it cannot decode.
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise BenchError(f"cannot read image {path}: the file is truncated, corrupt or not an image; "
                         "is it a complete, valid image file?")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return check_rgb(arr, str(path), convert_rgb)


def check_rgb(arr: np.ndarray, name: str, convert_rgb: bool) -> np.ndarray:
    """Accept 8/16-bit RGB. Grayscale, gray+alpha and RGBA are refused, or converted with a warning when
    `convert_rgb` is set (alpha is dropped, gray is repeated)."""
    if arr.dtype not in (np.uint8, np.uint16):
        raise BenchError(f"{name}: pixel type {arr.dtype} is not supported; use an 8- or 16-bit RGB image")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    if arr.ndim == 2:
        kind, fixed = "grayscale", np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        kind, fixed = "RGBA", arr[:, :, :3]
    elif arr.ndim == 3 and arr.shape[2] == 2:
        kind, fixed = "grayscale+alpha", np.repeat(arr[:, :, :1], 3, axis=2)
    else:
        raise BenchError(f"{name}: unsupported image shape {arr.shape}; expected height × width × 3 (RGB)")
    if not convert_rgb:
        raise BenchError(f"{name} is {kind}, not RGB; convert it to RGB or pass --convert-rgb to do it on load")
    if name not in _CONVERTED:  # once per image, though it is read again for each run
        _CONVERTED.add(name)
        warnings.warn(f"{name}: {kind} image converted to RGB", stacklevel=2)
    return np.ascontiguousarray(fixed)


_CONVERTED: set[str] = set()


def to_float(arr: np.ndarray) -> np.ndarray:
    return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    return np.round(to_float(arr) * 255.0).astype(np.uint8)


def resize_longest(img: np.ndarray, max_size: int) -> np.ndarray:
    """Downscale (anti-aliased) so the longest side is at most `max_size`; 0 or a larger size: unchanged.
    The bit depth is kept (a 16-bit image stays 16-bit)."""
    h, w = img.shape[:2]
    if max_size <= 0 or max(h, w) <= max_size:
        return img
    from skimage.transform import resize

    scale = max_size / max(h, w)
    shape = (max(1, round(h * scale)), max(1, round(w * scale)), img.shape[2])
    out = resize(to_float(img), shape, anti_aliasing=True, preserve_range=True)
    return np.round(np.clip(out, 0, 1) * float(np.iinfo(img.dtype).max)).astype(img.dtype)


def pixels_sha256(img: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str((img.shape, str(img.dtype))).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


# --- suites --------------------------------------------------------------------------------------------------
def _read_sums(name: str) -> dict[str, str]:
    sums = {}
    for line in (HERE / name).read_text().splitlines():
        if line.strip():
            digest, fname = line.split()
            sums[fname.lstrip("*")] = digest
    return sums


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "nint-bench"))


def _download(url: str, dest: Path, sha256: str) -> None:
    """Fetch to a temporary name, verify, then rename: a broken download never looks like a finished one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
            fh.write(resp.read())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BenchError(
            f"cannot download {url} ({exc}); offline, pass --data-dir DIR holding kodim01.png … kodim24.png"
        ) from None
    got = file_sha256(tmp)
    if got != sha256:
        tmp.unlink(missing_ok=True)
        raise BenchError(f"checksum mismatch for downloaded {dest.name}: expected {sha256[:12]}…, got {got[:12]}…")
    os.replace(tmp, dest)


def _checked_files(suite: str, folder: Path, fetch: bool, only: list[str] | None = None) -> list[ImageRef]:
    """The suite's files in `folder` (all of them, or the image ids in `only`), each to be verified by SHA-256
    when read; a missing one is downloaded if `fetch`, else a one-line error."""
    sums = _read_sums(f"{suite}.sha256")
    ids = {Path(fname).stem: fname for fname in sums}
    if only is not None:
        unknown = [i for i in only if i not in ids]
        if unknown:
            raise BenchError(f"suite {suite!r} has no image(s) {', '.join(unknown)}; it has {', '.join(sorted(ids))}")
    refs = []
    for stem, fname in sorted(ids.items()):
        if only is not None and stem not in only:
            continue
        path = folder / fname
        if not path.is_file():
            if not fetch:
                need = ("--images names it" if only is not None else
                        f"the suite needs {len(sums)} files (or name the images you have with --images)")
                raise BenchError(f"{fname} is missing from {folder}; {need}")
            print(f"downloading {fname} to {folder}", file=sys.stderr)
            _download(KODAK_URL.format(name=fname), path, sums[fname])
        refs.append(ImageRef(stem, path, sha256=sums[fname]))
    return refs


def kodak(data_dir: str | None = None, only: list[str] | None = None) -> list[ImageRef]:
    """The 24 Kodak images (768×512 / 512×768), verified by SHA-256; downloaded once into the cache if no
    --data-dir is given. `only`: just these image ids (a folder then needs only their files)."""
    if data_dir:
        return _checked_files("kodak", Path(data_dir), fetch=False, only=only)
    return _checked_files("kodak", cache_dir() / "kodak", fetch=True, only=only)


def div2k16(data_dir: str | None = None, only: list[str] | None = None) -> list[ImageRef]:
    """EVOS's 16 DIV2K test crops (512×512), verified by SHA-256, from --data-dir."""
    if not data_dir:
        raise BenchError("suite div2k16 has no download source: pass --data-dir DIR holding 00.png … 15.png")
    return _checked_files("div2k16", Path(data_dir), fetch=False, only=only)


BUILTIN_IMAGES = ("astronaut", "coffee", "chelsea")


def builtin(data_dir: str | None = None, only: list[str] | None = None) -> list[ImageRef]:
    """Three RGB photographs shipped inside scikit-image (no download): astronaut, coffee, chelsea."""
    import skimage.data

    return [ImageRef(name, loader=getattr(skimage.data, name)) for name in BUILTIN_IMAGES]


SUITES: dict[str, Callable[[str | None, list[str] | None], list[ImageRef]]] = {
    "builtin": builtin,
    "kodak": kodak,
    "div2k16": div2k16,
}


def list_suites() -> dict[str, str]:
    return {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in SUITES.items()}


def suite_images(name: str, data_dir: str | None = None, only: list[str] | None = None) -> list[ImageRef]:
    """Images of a named suite, or of a folder / single image file given as the suite name. `only` (image ids)
    lets a named suite's folder hold just those files; a folder or file suite is filtered by the caller."""
    if name in SUITES:
        return SUITES[name](data_dir, only)
    path = Path(name)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BenchError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        by_stem: dict[str, list[Path]] = {}
        for p in files:
            by_stem.setdefault(p.stem, []).append(p)
        for stem, same in by_stem.items():
            if len(same) > 1:
                raise BenchError(f"folder {path} holds {len(same)} images with the id {stem!r} "
                                 f"({', '.join(p.name for p in same)}): an image's id is its file name without "
                                 "the extension, so rename or move all but one")
        return [ImageRef(p.stem, p) for p in files]
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise BenchError(f"image not found: {path}; check the path (--suite takes a suite name, a folder or an image file)")
        return [ImageRef(path.stem, path)]
    raise BenchError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}, or give a folder or image file")

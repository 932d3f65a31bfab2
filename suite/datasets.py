"""Input frames for the runtime: real photos, prepared the way an ImageNet model expects them.

No data set can be downloaded at run time, so the default frames are the natural photos that ship
inside the scikit-image wheel (`SAMPLES`); a user points `suite run --images DIR` at their own.
Preparation is deterministic, so every device and every run sees the same bits for frame i.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import skimage.data
import skimage.io
import torch
from skimage.transform import resize
from skimage.util import img_as_float32

from suite.errors import UserError

# Photos whose files are inside the scikit-image wheel (the others need pooch and a download).
SAMPLES: tuple[str, ...] = ("astronaut", "camera", "chelsea", "coffee", "hubble_deep_field",
                            "immunohistochemistry", "retina", "rocket")  # fmt: skip
EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Frame:
    """One prepared input: `name` says which image it came from, `tensor` is (1, C, H, W) float32."""

    name: str
    tensor: torch.Tensor


def load_images(source: str | Path | None = None) -> list[tuple[str, np.ndarray]]:
    """The raw images: the bundled `SAMPLES` when `source` is None, else every image file in a folder.

    A folder's files are taken in name order so frame i is the same image on every run and host.
    """
    if source is None:
        return [(name, getattr(skimage.data, name)()) for name in SAMPLES]
    folder = Path(source)
    if not folder.is_dir():
        raise UserError(
            f"images folder '{folder}' does not exist or is not a folder; "
            "pass a folder of .png/.jpg/.bmp/.tif images (suite run --images DIR)"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise UserError(
            f"images folder '{folder}' has no .png/.jpg/.jpeg/.bmp/.tif files; "
            "add some or pass another folder"
        )
    return [(path.name, _read(path)) for path in files]


def _read(path: Path) -> np.ndarray:
    try:
        return np.asarray(skimage.io.imread(path))
    except Exception as err:  # any decoder failure means the same thing to the user
        said = (str(err).splitlines() or [""])[0][:120]  # decoders' messages run to several lines
        raise UserError(
            f"image '{path}' cannot be read ({type(err).__name__}: {said}); "
            "re-save it as png or jpg, or remove it from the folder"
        ) from None


def to_input(image: np.ndarray, input_shape: tuple[int, int, int], name: str = "image") -> torch.Tensor:
    """Prepare one image as a model input of shape (1, C, H, W), float32.

    Grey becomes RGB and alpha is dropped; the image is scaled so it covers H x W (its shorter side
    fits) and centre-cropped, as in ImageNet evaluation; values go to [0, 1] and are normalised with
    the ImageNet mean and std. A model with C != 3 input channels (a user's model) gets the grey
    level, the mean over RGB normalised with the mean of ImageNet's mean and std, repeated C times.
    """
    channels, height, width = _check_shape(input_shape)
    rgb = _fit(_as_rgb(image, name), height, width)
    if channels == 3:
        chw = ((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    else:
        grey = (rgb.mean(axis=2) - IMAGENET_MEAN.mean()) / IMAGENET_STD.mean()
        chw = np.broadcast_to(grey, (channels, height, width))
    return torch.from_numpy(np.array(chw, dtype=np.float32, order="C")).unsqueeze(0)  # a writable copy


def load_frames(input_shape: tuple[int, int, int], source: str | Path | None = None) -> list[Frame]:
    """Every image of `source` prepared for `input_shape`, once each; the runtime cycles them (i % len)."""
    return [Frame(name, to_input(image, input_shape, name)) for name, image in load_images(source)]


def _check_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or not all(isinstance(n, Integral) and n > 0 for n in input_shape):
        raise UserError(
            f"input_shape {tuple(input_shape)} is not (C, H, W) with positive integer sizes; "
            "give the model's input without the batch axis, e.g. (3, 224, 224)"
        )
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


def _as_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from grey, grey+alpha, RGB or RGBA of any integer or float dtype."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (1, 2, 3, 4):
        image = image[:, :, :1] if image.shape[2] < 3 else image[:, :, :3]
    elif image.ndim == 2:
        image = image[:, :, None]
    else:
        raise UserError(
            f"image '{name}' has shape {image.shape}, not grey (H, W) or colour (H, W, 3|4); "
            "save it as a single-frame grey or RGB image"
        )
    return np.broadcast_to(img_as_float32(image), (*image.shape[:2], 3))


def _fit(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale so the image covers height x width (anti-aliased, bilinear), then crop the centre."""
    scale = max(height / rgb.shape[0], width / rgb.shape[1])
    scaled_h = max(height, round(rgb.shape[0] * scale))
    scaled_w = max(width, round(rgb.shape[1] * scale))
    scaled = resize(rgb, (scaled_h, scaled_w), order=1, anti_aliasing=scale < 1, preserve_range=True)
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    return scaled[top : top + height, left : left + width].astype(np.float32, copy=False)

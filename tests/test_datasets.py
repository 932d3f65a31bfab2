"""Input frames: the bundled photos load offline, preparation is deterministic, user folders fail clearly."""

import numpy as np
import pytest
import skimage.io
import torch

from suite.datasets import IMAGENET_MEAN, IMAGENET_STD, SAMPLES, Frame, load_frames, load_images, to_input
from suite.errors import UserError

SHAPE = (3, 224, 224)


@pytest.fixture(scope="module")
def samples() -> list[tuple[str, np.ndarray]]:
    return load_images()


def test_bundled_samples_load_offline(samples):
    assert [name for name, _ in samples] == list(SAMPLES)
    for name, image in samples:
        assert image.ndim in (2, 3) and min(image.shape[:2]) >= 256, name


def test_frames_are_normalised_imagenet_inputs():
    frames = load_frames(SHAPE)
    assert [f.name for f in frames] == list(SAMPLES)
    for frame in frames:
        assert isinstance(frame, Frame)
        assert frame.tensor.shape == (1, *SHAPE) and frame.tensor.dtype == torch.float32
        assert frame.tensor.is_contiguous() and torch.isfinite(frame.tensor).all()
    lo, hi = (0 - IMAGENET_MEAN) / IMAGENET_STD, (1 - IMAGENET_MEAN) / IMAGENET_STD
    stacked = torch.cat([f.tensor for f in frames])
    for c in range(3):
        assert lo[c] - 1e-5 <= stacked[:, c].min() and stacked[:, c].max() <= hi[c] + 1e-5


def test_preparation_is_deterministic(samples):
    name, image = samples[0]
    assert torch.equal(to_input(image, SHAPE), to_input(image, SHAPE))


def test_grey_rgba_and_grey_alpha_become_rgb():
    grey = np.full((40, 60), 255, dtype=np.uint8)
    rgba = np.dstack([grey, grey, grey, np.zeros_like(grey)])
    grey_alpha = np.dstack([grey, np.zeros_like(grey)])
    white = torch.from_numpy((1 - IMAGENET_MEAN) / IMAGENET_STD)
    for image in (grey, rgba, grey_alpha):
        tensor = to_input(image, (3, 8, 8))
        assert torch.allclose(tensor[0, :, 4, 4], white)


def test_shorter_side_fits_and_the_centre_is_kept():
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, 10:30] = 255  # a white centre band exactly as wide as the crop of a 20 x 20 target
    tensor = to_input(image, (3, 20, 20))
    white = torch.from_numpy((1 - IMAGENET_MEAN) / IMAGENET_STD)[:, None, None]
    assert torch.allclose(tensor[0], white.expand(3, 20, 20))
    assert to_input(image, (3, 10, 50)).shape == (1, 3, 10, 50)  # wider than the image: scaled up


def test_other_channel_counts_get_the_grey_level():
    image = np.full((16, 16, 3), 128, dtype=np.uint8)
    tensor = to_input(image, (1, 8, 8))
    assert tensor.shape == (1, 1, 8, 8)
    expected = (128 / 255 - IMAGENET_MEAN.mean()) / IMAGENET_STD.mean()
    assert tensor[0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-5)
    assert to_input(image, (5, 8, 8)).shape == (1, 5, 8, 8)


@pytest.mark.parametrize("shape", [(224, 224), (3, 0, 224), (3, 224.0, 224)])
def test_bad_input_shape_is_a_user_error(shape):
    with pytest.raises(UserError, match="input_shape"):
        to_input(np.zeros((8, 8), np.uint8), shape)


def test_unusable_array_names_the_image():
    with pytest.raises(UserError, match="'stack.tif'"):
        to_input(np.zeros((2, 8, 8, 3), np.uint8), SHAPE, name="stack.tif")


def test_user_folder_is_read_in_name_order(tmp_path):
    skimage.io.imsave(tmp_path / "b.png", np.full((32, 32, 3), 200, np.uint8), check_contrast=False)
    skimage.io.imsave(tmp_path / "a.jpg", np.full((32, 48), 50, np.uint8), check_contrast=False)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()
    frames = load_frames((3, 16, 16), tmp_path)
    assert [f.name for f in frames] == ["a.jpg", "b.png"]
    assert all(f.tensor.shape == (1, 3, 16, 16) for f in frames)


@pytest.mark.filterwarnings("ignore:The legacy `DICOM` plugin:DeprecationWarning")  # imageio trying plugins
def test_missing_empty_and_broken_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_images(tmp_path / "nope")
    with pytest.raises(UserError, match="has no .png"):
        load_images(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg"):
        load_images(tmp_path)

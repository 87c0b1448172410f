import numpy as np
import pytest
import torch

from kangaroo.video.preprocess import CLIP_MEAN, CLIP_STD, PreprocessConfig, preprocess_frames


def test_square_resize_and_normalise():
    frames = np.full((3, 100, 200, 3), 255, np.uint8)
    x = preprocess_frames(frames, PreprocessConfig(size=224))
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    expect = (1.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(x[0, :, 10, 10], expect, atol=1e-4)


def test_pad_keeps_aspect():
    frames = np.zeros((2, 100, 200, 3), np.uint8)
    x = preprocess_frames(frames, PreprocessConfig(size=224, mode="pad"))
    # 200x100 -> 224x112, padded up to multiples of 28
    assert x.shape == (2, 3, 112, 224)
    frames = np.zeros((1, 90, 200, 3), np.uint8)
    x = preprocess_frames(frames, PreprocessConfig(size=224, mode="pad"))
    assert x.shape == (1, 3, 112, 224)
    assert torch.all(x[0, :, 101:, :] == 0)  # padding is the mean colour (0 after normalisation)


def test_bad_shapes():
    with pytest.raises(ValueError):
        preprocess_frames(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError):
        PreprocessConfig(mode="crop")

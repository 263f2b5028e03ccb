import numpy as np
import pytest
import torch
from PIL import Image

from clipworks import image_transform
from clipworks.image.transforms import to_rgb

open_clip = pytest.importorskip("open_clip")


@pytest.mark.parametrize("size", [224, 336, 32])
def test_eval_transform_matches_open_clip_on_real_photos(photos, size):
    ref, mine = open_clip.image_transform(size, is_train=False), image_transform(size)
    for name, im in photos.items():
        for mode in ("RGB", "L", "P", "RGBA", "LA", "CMYK"):
            x = im.convert(mode)
            diff = (ref(x) - mine(x)).abs().max().item()
            assert diff <= 1e-6, f"{name} {mode} {im.size}: {diff}"


def test_odd_sizes_and_tiny_images_match(photos):
    ref, mine = open_clip.image_transform(224, is_train=False), image_transform(224)
    im = photos["astronaut"]
    for w, h in [(1, 1), (3, 500), (500, 3), (223, 225), (224, 224), (1000, 17)]:
        x = im.resize((w, h))
        assert (ref(x) - mine(x)).abs().max().item() <= 1e-6, (w, h)


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    im = Image.fromarray(ramp)
    assert im.mode == "I;16"
    rgb = np.asarray(to_rgb(im))
    assert rgb.shape == (64, 64, 3) and rgb.min() == 0 and rgb.max() == 255
    assert len(np.unique(rgb[..., 0])) > 200  # a ramp, not a saturated block
    assert image_transform(32)(im).shape == (3, 32, 32)


def test_train_transform_is_random_but_seeded(photos):
    im = photos["astronaut"]  # square: at scale (0.9, 1) a 3:2 photo always falls back to the centre crop
    a, b = image_transform(64, train=True, seed=0), image_transform(64, train=True, seed=0)
    xs = [a(im) for _ in range(3)]
    assert all(torch.equal(x, b(im)) for x in xs)
    assert not torch.equal(xs[0], xs[1])
    assert xs[0].shape == (3, 64, 64) and xs[0].dtype == torch.float32

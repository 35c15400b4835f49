"""Your own data as a class-incremental sequence (``peft-memory train --dataset ...``).

Any source ``datasets.load_dataset`` reads: a hub id, a folder of csv / json / parquet files (``train.csv`` and
``test.csv`` become the train and test splits), an ``imagefolder`` (one sub-folder per class), or one data file. The
input column is renamed ``text`` or ``image`` and the class column ``label``; the classes are cut into tasks of equal
size in a class order drawn from the seed, or given by name.
"""

from __future__ import annotations

import os

import datasets
import numpy as np

from .tasks import TaskSequence, class_incremental_split, column_values, text_problem

#: File extension -> ``datasets`` builder, for ``--dataset path/to/one_file``.
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def read_dataset(source: str, config_name: str | None = None, cache_dir: str | None = None,
                 training: bool = True) -> datasets.DatasetDict:
    """``datasets.load_dataset`` of ``source``: a single file goes through the builder of its extension
    (:data:`FILE_BUILDERS`) as the train split; a folder or hub id as ``load_dataset`` reads it. With ``training``
    (``train --dataset``) the data must hold training data: a lone split of another name becomes ``train``.

    Raises:
        ValueError: for a file of another extension; with ``training``, data with only test/validation splits, or
            without a ``train`` split when they have several.
    """
    if os.path.isfile(source):
        ext = os.path.splitext(source)[1].lower()
        if ext not in FILE_BUILDERS:
            raise ValueError(f"--dataset {source!r}: files ending in {ext or '(no extension)'} are not read; use "
                             f"{', '.join(FILE_BUILDERS)}, or a folder.")
    try:
        if os.path.isfile(source):
            kwargs = {"delimiter": "\t"} if ext == ".tsv" else {}
            data = datasets.load_dataset(FILE_BUILDERS[ext], data_files={"train": source}, cache_dir=cache_dir,
                                         **kwargs)
        else:
            data = datasets.load_dataset(source, config_name, cache_dir=cache_dir)
    except UnicodeDecodeError as err:
        raise ValueError(f"--dataset {source!r} is not UTF-8 text ({err}); save it as UTF-8 (e.g. "
                         "`iconv -f latin1 -t utf-8 FILE`).") from err
    except datasets.exceptions.DatasetGenerationError as err:  # the builder wraps what the file made it raise
        cause = err.__cause__ or err
        if isinstance(cause, UnicodeDecodeError):
            raise ValueError(f"--dataset {source!r} is not UTF-8 text ({cause}); save it as UTF-8 (e.g. "
                             "`iconv -f latin1 -t utf-8 FILE`).") from err
        raise ValueError(f"--dataset {source!r} could not be read: {' '.join(str(cause).split())}") from err
    if "train" not in data and training:
        if set(data) <= {"test", "validation", "valid", "dev"}:
            raise ValueError(f"--dataset {source!r} has only the split(s) {list(data)}: there are no training data. "
                             "Add train.* files to the folder (or pass the training file itself).")
        if len(data) != 1:
            raise ValueError(f"--dataset {source!r} has splits {list(data)} but no 'train'; name the training "
                             "files train.* (or the split 'train').")
        data = datasets.DatasetDict({"train": next(iter(data.values()))})
    return data


def _input_column(ds: datasets.Dataset, text_column: str | None, image_column: str | None) -> tuple[str, str]:
    """(modality, column) of the model's input."""
    images = [name for name, f in ds.features.items() if isinstance(f, datasets.Image)]
    if image_column is not None or (text_column is None and images):
        column, modality = image_column or images[0], "image"
    else:
        column, modality = text_column or "text", "text"
    if column not in ds.column_names:
        flag = "--image_column" if modality == "image" else "--text_column"
        raise ValueError(f"the data have no {column!r} column (columns: {ds.column_names}); pass {flag} naming the "
                         f"column that holds the {modality}.")
    return modality, column


def _check_texts(ds: datasets.Dataset, column: str, split: str) -> None:
    """Raise ``ValueError`` naming the column and the rows when the text column holds no text, or rows without
    any (null, empty or blank)."""
    kind, detail = text_problem(ds, column) or (None, None)
    if kind == "type":
        raise ValueError(f"column {column!r} of the {split} data holds {detail}, not text; pass --text_column naming "
                         "the column that holds the text.")
    if kind == "rows":
        raise ValueError(f"the {split} data have no text in rows {detail} of column {column!r} (0-based, header "
                         "excluded: null, empty or blank); fill them or drop those rows.")


def _check_images(ds: datasets.Dataset, column: str, split: str) -> None:
    """Open every image of ``column`` without decoding it (PIL's ``verify``): raise ``ValueError`` naming the first
    files (or rows) that are no readable image: corrupt, truncated, empty, another format, or over PIL's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``)."""
    import io

    from PIL import Image

    bad = []
    for i, cell in enumerate(column_values(ds.cast_column(column, datasets.Image(decode=False)), column)):
        where = (cell or {}).get("path") or f"row {i}"
        try:
            if not cell or not (cell.get("bytes") or cell.get("path")):
                raise ValueError("no image")
            with Image.open(io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]) as img:
                img.verify()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            bad.append(f"{where} ({type(err).__name__}: {' '.join(str(err).split())[:120]})")
            if len(bad) == 5:
                break
    if bad:
        raise ValueError(f"the {split} data hold images that cannot be read: {'; '.join(bad)}. Remove or replace "
                         "those files.")


def _classes(train: datasets.Dataset, test: datasets.Dataset, label_column: str) -> tuple[list, list[str]]:
    """(label values in class-id order, class names): a ClassLabel's ids and names, else the sorted values."""
    for split, ds in (("train", train), ("test", test)):
        if label_column not in ds.column_names:
            raise ValueError(f"the {split} data have no {label_column!r} column (columns: {ds.column_names}); pass "
                             "--label_column naming the column that holds the class.")
    labels = {split: column_values(ds, label_column) for split, ds in (("train", train), ("test", test))}
    for split, values in labels.items():
        missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and v != v)]
        if missing:
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise ValueError(f"the {split} data have no class in rows {missing[:10]}{more} (0-based, header excluded: "
                             f"blank, null or NaN in column {label_column!r}); fill those labels or drop the rows.")
    feature = train.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(range(feature.num_classes)), list(feature.names)
    values = sorted(set(labels["train"]), key=lambda v: (str(type(v)), v))
    if test is not train:
        trained, tested = {str(v) for v in values}, {str(v) for v in labels["test"]}
        if trained != tested:
            raise ValueError(f"the train and test data have different classes: test only {sorted(tested - trained)[:5]}"
                             f", train only {sorted(trained - tested)[:5]}; every class needs training and test "
                             "examples (check --label_column and the files), or drop --test_split to hold out part "
                             "of the training data.")
    return values, [str(v) for v in values]


def _standardize(ds: datasets.Dataset, column: str, modality: str, label_column: str,
                 values: list) -> datasets.Dataset:
    """Keep the input column (renamed ``text``/``image``) and the class id as integer ``label``."""
    index = {str(v): i for i, v in enumerate(values)}
    ds = ds.select_columns(list(dict.fromkeys([column, label_column])))
    ds = ds.map(lambda labels: {"_label": [index[str(v)] for v in labels]}, batched=True, input_columns=label_column)
    ds = ds.remove_columns([c for c in ds.column_names if c not in (column, "_label")])
    if column != modality:
        ds = ds.rename_column(column, modality)
    return ds.rename_column("_label", "label")


def _task_count(num_classes: int, num_tasks: int | None, classes_per_task: int | None) -> int:
    if num_tasks is None and classes_per_task is None:
        raise ValueError(f"the data have {num_classes} classes; pass --num_tasks or --classes_per_task to cut them "
                         "into tasks.")
    if classes_per_task is not None:
        if num_classes % classes_per_task:
            raise ValueError(f"{num_classes} classes do not cut into tasks of {classes_per_task}; pick a divisor of "
                             f"{num_classes}, or list the classes to use with --class_order.")
        if num_tasks is not None and num_tasks * classes_per_task != num_classes:
            raise ValueError(f"--num_tasks {num_tasks} x --classes_per_task {classes_per_task} != {num_classes} "
                             "classes; pass only one of them.")
        return num_classes // classes_per_task
    if num_classes % num_tasks:
        raise ValueError(f"{num_classes} classes do not cut into {num_tasks} equal tasks; pick a divisor of "
                         f"{num_classes}, or list the classes to use with --class_order.")
    return num_tasks


def load_custom_sequence(
    source: str,
    *,
    num_tasks: int | None = None,
    classes_per_task: int | None = None,
    text_column: str | None = None,
    image_column: str | None = None,
    label_column: str = "label",
    class_order: list[str] | None = None,
    test_split: str = "test",
    test_size: float = 0.2,
    seed: int = 0,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    config_name: str | None = None,
    cache_dir: str | None = None,
) -> TaskSequence:
    """A class-incremental :class:`TaskSequence` of your data (the ``peft-memory train --dataset`` flags).

    Class names come from a ClassLabel feature, else from the label values as written (``"1"``, ``"positive"``).
    Without ``test_split`` in the data, a class-stratified ``test_size`` of the training data, drawn from ``seed``,
    is the test set. The sequence's ``description`` (recorded in ``results.json``) names the source, the test split
    and the class order. Tasks are ``task_0`` ... in class order.

    Raises:
        ValueError: naming the flag and the fix, for a missing column, rows without a class, a ``test_split`` the
            data do not have, data with only a test split, classes that do not cut into equal tasks, a
            ``class_order`` entry that is no class (or repeats one), or train and test data of different classes.
    """
    data = read_dataset(source, config_name, cache_dir)
    train = data["train"]
    modality, column = _input_column(train, text_column, image_column)
    if test_split not in data and test_split != "test":  # a split the user named; the default may be absent
        raise ValueError(f"--test_split {test_split!r} is not a split of --dataset {source!r}; its splits are "
                         f"{list(data)}. Name one of them, or leave --test_split out to hold out --test_size of the "
                         "training data.")
    if test_split in data and test_split != "train":
        test, test_note = data[test_split], f"split {test_split!r}"
    else:
        test, test_note = None, f"{test_size:g} of the train split, class-stratified, seed {seed}"
    for split, ds in (("train", train), ("test", test)):
        if ds is not None:
            (_check_texts if modality == "text" else _check_images)(ds, column, split)
    values, names = _classes(train, test if test is not None else train, label_column)
    train = _standardize(train, column, modality, label_column, values)
    if test is None:
        labelled = train.cast_column("label", datasets.ClassLabel(names=names))  # stratification needs ClassLabel
        parts = labelled.train_test_split(test_size=test_size, seed=seed, stratify_by_column="label")
        train, test = (parts[s].cast_column("label", datasets.Value("int64")) for s in ("train", "test"))
    else:
        test = _standardize(test, column, modality, label_column, values)
    order = None
    if class_order is not None:
        position = {n: i for i, n in enumerate(names)}
        unknown = [c for c in class_order if c not in position]
        if unknown:
            raise ValueError(f"--class_order names {unknown[:5]}, which are no classes of the data; the classes are "
                             f"{names[:20]}{' ...' if len(names) > 20 else ''}.")
        if len(set(class_order)) != len(class_order):
            raise ValueError("--class_order lists a class more than once; list each class once.")
        order = [position[c] for c in class_order]
    count = _task_count(len(order if order is not None else names), num_tasks, classes_per_task)
    name = os.path.basename(os.path.normpath(source)) or source
    sequence = class_incremental_split(name, train, test, names, count, seed, train_per_class, test_per_class,
                                       class_order=order)
    used = [n for t in sequence.tasks for n in t.label_names]
    sequence.description = {"source": source, "modality": modality, "input_column": column,
                            "label_column": label_column, "test_split": test_note, "class_order": used,
                            "class_order_from": "--class_order" if order is not None else f"seed {seed}",
                            "num_rows": {"train": int(np.sum([len(t.train) for t in sequence.tasks])),
                                         "test": int(np.sum([len(t.test) for t in sequence.tasks]))}}
    return sequence

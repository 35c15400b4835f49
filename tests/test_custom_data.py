"""``--dataset``: your own data as a class-incremental sequence, from local files of each format datasets reads."""

import csv
import json
import re

import datasets
import numpy as np
import pytest

from peft_memory.continual.data.custom_data import load_custom_sequence

CLASSES = ("billing", "delivery", "account", "product")


def rows(n, offset=0):
    return [{"message": f"{c} issue number {offset + i}", "category": c} for c in CLASSES for i in range(n)]


def write_csv(path, data):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["message", "category"])
        w.writeheader()
        w.writerows(data)


@pytest.fixture
def csv_folder(tmp_path):
    folder = tmp_path / "tickets"
    folder.mkdir()
    write_csv(folder / "train.csv", rows(6))
    write_csv(folder / "test.csv", rows(2, offset=100))
    return folder


def test_csv_folder_with_train_and_test(csv_folder):
    seq = load_custom_sequence(str(csv_folder), text_column="message", label_column="category", num_tasks=2, seed=0)
    assert seq.name == "tickets" and seq.modality == "text" and len(seq) == 2
    assert sorted(seq.global_label_names) == sorted(CLASSES)  # names from the values, sorted
    assert sorted(n for t in seq.tasks for n in t.label_names) == sorted(CLASSES)
    for task in seq.tasks:
        assert len(task.train) == 12 and len(task.test) == 4
        assert task.train.column_names == ["text", "label"]
        for row in task.test:  # the text of every test row belongs to the class its local label names
            assert row["text"].startswith(task.label_names[row["label"]]) and "issue number 1" in row["text"]
    assert seq.description["test_split"] == "split 'test'"
    assert seq.description["class_order"] == [n for t in seq.tasks for n in t.label_names]
    assert seq.description["class_order_from"] == "seed 0"
    other = load_custom_sequence(str(csv_folder), text_column="message", label_column="category", num_tasks=2, seed=1)
    assert other.description["class_order"] != seq.description["class_order"]  # the seed fixes the order


def test_explicit_class_order_and_classes_per_task(csv_folder):
    order = ["product", "billing", "account", "delivery"]
    seq = load_custom_sequence(str(csv_folder), text_column="message", label_column="category", classes_per_task=2,
                               class_order=order)
    assert [t.label_names for t in seq.tasks] == [order[:2], order[2:]]
    assert seq.description["class_order_from"] == "--class_order"
    subset = load_custom_sequence(str(csv_folder), text_column="message", label_column="category", num_tasks=1,
                                  class_order=["account", "billing"])
    assert subset.tasks[0].label_names == ["account", "billing"] and len(subset.tasks[0].train) == 12


def test_one_file_without_test_split_is_split_by_seed_and_recorded(tmp_path):
    path = tmp_path / "tickets.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows(10)))
    kwargs = dict(text_column="message", label_column="category", num_tasks=2, test_size=0.2, seed=3)
    seq = load_custom_sequence(str(path), **kwargs)
    again = load_custom_sequence(str(path), **kwargs)
    assert seq.description["test_split"] == "0.2 of the train split, class-stratified, seed 3"
    for task, same in zip(seq.tasks, again.tasks):
        assert np.bincount(task.test["label"]).tolist() == [2, 2]  # stratified: 20% of 10 per class
        assert np.bincount(task.train["label"]).tolist() == [8, 8]
        assert task.test["text"] == same.test["text"]  # seeded
        assert not set(task.test["text"]) & set(task.train["text"])


def test_parquet_with_classlabel_names(tmp_path):
    features = datasets.Features({"review": datasets.Value("string"),
                                  "stars": datasets.ClassLabel(names=["bad", "meh", "good", "great"])})
    data = {"review": [f"review {i}" for i in range(16)], "stars": [i % 4 for i in range(16)]}
    folder = tmp_path / "reviews"
    folder.mkdir()
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(folder / "train.parquet"))
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(folder / "test.parquet"))
    seq = load_custom_sequence(str(folder), text_column="review", label_column="stars", num_tasks=2,
                               class_order=["great", "good", "meh", "bad"])
    assert seq.global_label_names == ["bad", "meh", "good", "great"]  # the ClassLabel's names, in its order
    assert seq.tasks[0].label_names == ["great", "good"] and seq.tasks[0].global_labels == [3, 2]
    assert [seq.tasks[0].test[i]["text"] for i in range(2)] == ["review 2", "review 3"]


def test_imagefolder(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("test", 2)):
        for c, colour in (("red", (255, 0, 0)), ("green", (0, 255, 0))):
            (tmp_path / "img" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), colour).save(tmp_path / "img" / split / c / f"{i}.png")
    seq = load_custom_sequence(str(tmp_path / "img"), classes_per_task=1)
    assert seq.modality == "image" and seq.description["input_column"] == "image"
    assert sorted(seq.global_label_names) == ["green", "red"]
    task = seq.tasks[0]
    assert len(task.train) == 3 and len(task.test) == 2
    assert task.test[0]["image"].getpixel((0, 0)) == {"red": (255, 0, 0), "green": (0, 255, 0)}[task.label_names[0]]
    explicit = load_custom_sequence(str(tmp_path / "img"), classes_per_task=1, image_column="image", seed=0)
    assert explicit.modality == "image" and explicit.global_label_names == seq.global_label_names
    with pytest.raises(ValueError, match=r"the data have no 'picture' column .* pass --image_column naming the column "
                                         r"that holds the image\."):
        load_custom_sequence(str(tmp_path / "img"), classes_per_task=1, image_column="picture")


@pytest.mark.parametrize("kwargs,message", [
    (dict(text_column="body", label_column="category", num_tasks=2),
     "the data have no 'body' column (columns: ['message', 'category']); pass --text_column naming the column that "
     "holds the text."),
    (dict(text_column="message", label_column="topic", num_tasks=2),
     "the train data have no 'topic' column (columns: ['message', 'category']); pass --label_column naming the column "
     "that holds the class."),
    (dict(text_column="message", label_column="category", num_tasks=3),
     "4 classes do not cut into 3 equal tasks; pick a divisor of 4, or list the classes to use with --class_order."),
    (dict(text_column="message", label_column="category"),
     "the data have 4 classes; pass --num_tasks or --classes_per_task to cut them into tasks."),
    (dict(text_column="message", label_column="category", num_tasks=4, classes_per_task=2),
     "--num_tasks 4 x --classes_per_task 2 != 4 classes; pass only one of them."),
    (dict(text_column="message", label_column="category", num_tasks=1, class_order=["billing", "refunds"]),
     "--class_order names ['refunds'], which are no classes of the data; the classes are ['account', 'billing', "
     "'delivery', 'product']."),
    (dict(text_column="message", label_column="category", num_tasks=1, class_order=["billing", "billing"]),
     "--class_order lists a class more than once; list each class once."),
])
def test_errors_name_the_flag_and_the_fix(csv_folder, kwargs, message):
    with pytest.raises(ValueError) as err:
        load_custom_sequence(str(csv_folder), **kwargs)
    assert str(err.value) == message


def test_test_labels_without_training_examples_and_unknown_file_type(tmp_path, csv_folder):
    write_csv(csv_folder / "test.csv", rows(1) + [{"message": "where is my voucher", "category": "vouchers"}])
    with pytest.raises(ValueError, match=re.escape("the train and test data have different classes: test only "
                                                   "['vouchers'], train only []")):
        load_custom_sequence(str(csv_folder), text_column="message", label_column="category", num_tasks=2)
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match=r"files ending in \.txt are not read; use \.csv, \.tsv, \.json"):
        load_custom_sequence(str(tmp_path / "data.txt"), num_tasks=1)


@pytest.mark.parametrize("fmt", ["csv", "jsonl_null", "jsonl_missing", "parquet_nan"])
def test_rows_without_a_class_are_named(tmp_path, fmt):
    """A blank CSV cell, a JSON null or missing key, a parquet NaN: an error naming the rows, never a class 'None'."""
    data = rows(3)
    folder = tmp_path / "data"
    folder.mkdir()
    if fmt == "csv":
        data[4]["category"] = ""
        data[7]["category"] = ""
        write_csv(folder / "train.csv", data)
    elif fmt.startswith("jsonl"):
        data[4]["category"] = None
        data[7] = {"message": data[7]["message"]} if fmt == "jsonl_missing" else {**data[7], "category": None}
        (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in data))
    else:
        values = [1.0 if r["category"] == "billing" else 2.0 for r in data]
        values[4] = values[7] = float("nan")
        datasets.Dataset.from_dict({"message": [r["message"] for r in data], "category": values}).to_parquet(
            str(folder / "train.parquet"))
    with pytest.raises(ValueError, match=re.escape("the train data have no class in rows [4, 7] (0-based, header "
                                                   "excluded: blank, null or NaN in column 'category'); fill those "
                                                   "labels or drop the rows.")):
        load_custom_sequence(str(folder), text_column="message", label_column="category", num_tasks=1)


def test_a_named_test_split_must_exist_and_a_folder_needs_training_data(csv_folder, tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"--test_split 'validation' is not a split of --dataset "
                                                   f"{str(csv_folder)!r}; its splits are ['train', 'test'].")):
        load_custom_sequence(str(csv_folder), text_column="message", label_column="category", num_tasks=2,
                             test_split="validation")
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    write_csv(only_test / "test.csv", rows(2))
    with pytest.raises(ValueError, match=re.escape(f"--dataset {str(only_test)!r} has only the split(s) ['test']: "
                                                   "there are no training data.")):
        load_custom_sequence(str(only_test), text_column="message", label_column="category", num_tasks=2)


def test_train_classes_missing_from_the_test_data_are_named(csv_folder):
    write_csv(csv_folder / "test.csv", [r for r in rows(2, offset=100) if r["category"] != "account"])
    with pytest.raises(ValueError, match=re.escape("the train and test data have different classes: test only [], "
                                                   "train only ['account']")):
        load_custom_sequence(str(csv_folder), text_column="message", label_column="category", num_tasks=2)


def test_the_text_pipeline_names_what_the_tokenizer_cannot_read(tokenizer):
    """Tasks built in Python reach the tokenizer without --dataset's checks: a column of numbers or a None used to
    raise the tokenizer's TypeError naming neither column nor row; an empty text still tokenizes."""
    from peft_memory.continual.data.inputs import TextInputs

    inputs = TextInputs(tokenizer)
    with pytest.raises(ValueError, match=re.escape("column 'text' holds Value('int64'), not text; pass text (str)")):
        inputs.prepare(datasets.Dataset.from_dict({"text": [1, 2], "label": [0, 1]}))
    with pytest.raises(ValueError, match=re.escape("the data have no text in rows [1] of column 'text' (0-based: "
                                                   "null); pass text (str) in every row")):
        inputs.prepare(datasets.Dataset.from_dict({"text": ["a", None, ""], "label": [0, 1, 0]}))
    assert len(inputs.prepare(datasets.Dataset.from_dict({"text": ["a b", ""], "label": [0, 1]}))) == 2


def test_text_cells_and_encodings_are_checked_with_the_rows_named(csv_folder, tmp_path):
    data = rows(3)
    data[2]["message"] = ""
    data[5]["message"] = "   "
    write_csv(csv_folder / "train.csv", data)
    with pytest.raises(ValueError, match=re.escape("the train data have no text in rows [2, 5] of column 'message' "
                                                   "(0-based, header excluded: null, empty or blank)")):
        load_custom_sequence(str(csv_folder), text_column="message", label_column="category", num_tasks=2)
    with pytest.raises(ValueError, match=r"column 'number' of the train data holds Value\(.int64.*not text"):
        numbers = tmp_path / "numbers.csv"
        numbers.write_text("number,category\n1,a\n2,b\n3,a\n4,b\n")
        load_custom_sequence(str(numbers), text_column="number", label_column="category", num_tasks=1)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("message,category\ncaf\xe9 cr\xe8me,a\nna\xefve,b\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"--dataset {str(latin)!r} is not UTF-8 text")):
        load_custom_sequence(str(latin), text_column="message", label_column="category", num_tasks=1)


def test_unreadable_images_are_named_by_file(tmp_path):
    """A corrupt file, an empty one and a decompression bomb (over PIL's pixel limit) in an imagefolder: one error
    naming them, before anything trains (a ViT would otherwise fail mid-epoch on the first bad batch)."""
    from PIL import Image

    for split in ("train", "test"):
        for c, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            (tmp_path / "shapes" / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), color).save(tmp_path / "shapes" / split / c / f"{i}.png")
    broken = tmp_path / "shapes" / "train" / "red"
    (broken / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (broken / "1.png").write_bytes(b"")
    Image.new("1", (4000, 4000)).save(broken / "2.png")  # 16 Mpx: over the limit set below
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1_000_000  # the bomb limit is twice this
    try:
        with pytest.raises(ValueError) as err:
            load_custom_sequence(str(tmp_path / "shapes"), num_tasks=1)
    finally:
        Image.MAX_IMAGE_PIXELS = old
    message = str(err.value)
    assert message.startswith("the train data hold images that cannot be read: ")
    for name, kind in (("0.png", "OSError"), ("1.png", "UnidentifiedImageError"),
                       ("2.png", "DecompressionBombError")):
        assert f"{broken / name} ({kind}: " in message, (name, message)

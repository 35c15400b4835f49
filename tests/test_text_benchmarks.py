"""Text task sequences on local fixtures with each hub dataset's schema (real ``datasets.load_dataset`` code)."""

import json
import re

import datasets
import pytest

from peft_memory.continual.data.tasks import class_incremental_split, sample_per_class, split_classes, split_tasks
from peft_memory.continual.data.text_benchmarks import (
    TEXT_ORDERS,
    TEXT_SOURCES,
    five_dataset_text,
    read_wordnet_nouns,
    wordnet_10split,
    wordnet_supersenses,
)

SCHEMAS = {  # name -> (columns builder, label column, number of classes, first label)
    "ag_news": (lambda i: {"text": f"news {i}"}, "label", 4, 0),
    "yelp": (lambda i: {"text": f"review {i}"}, "label", 5, 0),
    "amazon": (lambda i: {"review_title": f"title {i}", "review_text": f"body {i}"}, "class_index", 5, 1),
    "dbpedia": (lambda i: {"title": f"t{i}", "content": f"c{i}"}, "label", 14, 0),
    "yahoo": (lambda i: {"question_title": f"q{i}", "question_content": "", "best_answer": f"a{i}"}, "topic", 10, 0),
}


@pytest.fixture(scope="module")
def fixture_sources(tmp_path_factory):
    """One folder per dataset with train.jsonl / test.jsonl in the published schema (6 train, 3 test per class)."""
    sources = {}
    for name, (columns, label_col, n_classes, first) in SCHEMAS.items():
        folder = tmp_path_factory.mktemp(name)
        for split, per_class in (("train", 6), ("test", 3)):
            with open(folder / f"{split}.jsonl", "w") as f:
                for c in range(n_classes):
                    for i in range(per_class):
                        f.write(json.dumps({**columns(f"{split}{c}-{i}"), label_col: c + first}) + "\n")
        sources[name] = TEXT_SOURCES[name].__class__(**{**TEXT_SOURCES[name].__dict__, "hub_id": str(folder)})
    return sources


@pytest.mark.parametrize("order", sorted(TEXT_ORDERS))
def test_orders_and_shared_label_space(order, fixture_sources):
    seq = five_dataset_text(order=order, train_per_class=4, test_per_class=2, sources=fixture_sources)
    assert [t.name for t in seq.tasks] == list(TEXT_ORDERS[order])
    assert seq.num_classes == 33  # 4 + 5 (yelp = amazon) + 14 + 10
    by_name = {t.name: t for t in seq.tasks}
    assert by_name["yelp"].global_labels == by_name["amazon"].global_labels
    offsets = sorted({g for t in seq.tasks for g in t.global_labels})
    assert offsets == list(range(33))
    first = seq.tasks[0]
    assert first.global_labels == list(range(first.num_labels))  # the first task starts the label space


def test_label_offsets_and_counts(fixture_sources):
    seq = five_dataset_text(order=4, train_per_class=4, test_per_class=None, sources=fixture_sources)
    ag, yelp, amazon, yahoo, dbpedia = seq.tasks
    assert yelp.global_labels == [4, 5, 6, 7, 8] and yahoo.global_labels == list(range(9, 19))
    assert dbpedia.global_labels == list(range(19, 33))
    for t in seq.tasks:
        labels = t.train["label"]
        assert sorted(set(labels)) == list(range(t.num_labels))  # local labels, 1-based amazon shifted to 0
        assert all(labels.count(c) == 4 for c in range(t.num_labels))
        assert len(t.test) == 3 * t.num_labels  # None keeps the full test set
    assert amazon.train[0]["text"].startswith("title ") and " body " in amazon.train[0]["text"]
    assert yahoo.train[0]["text"].startswith("q") and " a" in yahoo.train[0]["text"]


def test_sampling_is_seeded(fixture_sources):
    a = five_dataset_text(order=5, train_per_class=3, test_per_class=1, seed=1, sources=fixture_sources)
    b = five_dataset_text(order=5, train_per_class=3, test_per_class=1, seed=1, sources=fixture_sources)
    c = five_dataset_text(order=5, train_per_class=3, test_per_class=1, seed=2, sources=fixture_sources)
    assert a.tasks[0].train["text"] == b.tasks[0].train["text"] != c.tasks[0].train["text"]


def test_errors(fixture_sources):
    with pytest.raises(ValueError, match=r"order=3 is not one of \[4, 5, 6, 7\]"):
        five_dataset_text(order=3, sources=fixture_sources)
    with pytest.raises(ValueError, match="fewer than the 50 asked for"):
        five_dataset_text(order=4, train_per_class=50, sources=fixture_sources)
    bad = {"ag_news": fixture_sources["ag_news"].__class__(
        **{**fixture_sources["ag_news"].__dict__, "text_columns": ("headline",)})}
    with pytest.raises(ValueError, match=r"has no column\(s\) \['headline'\]"):
        five_dataset_text(order=4, train_per_class=2, sources={**fixture_sources, **bad})


def test_split_classes_and_sequence_validation():
    import datasets

    groups = split_classes(range(6), 3, seed=0)
    assert sorted(c for g in groups for c in g) == list(range(6)) and split_classes(range(6), 3, 0) == groups
    with pytest.raises(ValueError, match="cannot split 5 classes into 2 equal tasks"):
        split_classes(range(5), 2, 0)
    ds = datasets.Dataset.from_dict({"text": [str(i) for i in range(12)], "label": [i % 4 for i in range(12)]})
    seq = class_incremental_split("toy", ds, ds, list("abcd"), 2, seed=3)
    assert set(seq.tasks[0].global_labels).isdisjoint(seq.tasks[1].global_labels)
    for t in seq.tasks:
        assert [t.label_names[c] for c in range(2)] == [list("abcd")[g] for g in t.global_labels]
        assert all(int(x) % 4 == t.global_labels[y] for x, y in zip(t.train["text"], t.train["label"]))
    with pytest.raises(ValueError, match="task names must be unique"):
        type(seq)("dup", [seq.tasks[0], seq.tasks[0]], seq.global_label_names)
    with pytest.raises(ValueError, match="fewer than the 9 asked for"):
        sample_per_class(ds, 9, seed=0)


DATA_NOUN = """  1 This software and database is being provided to you, the LICENSEE, by
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived
{rows}"""


def test_wordnet_reader_and_sequence_on_fixture(tmp_path):
    rows = []
    for lex in (4, 5, 6, 7, 8, 9):  # six supersenses, 10 synsets each (plus one larger)
        for i in range(20 + (lex == 6)):
            rows.append(f"{lex:02d}{i:06d} {lex:02d} n 01 word_{lex}_{i} 0 000 | gloss {lex} {i}")
    path = tmp_path / "data.noun"
    path.write_text(DATA_NOUN.format(rows="\n".join(rows)) + "\n")
    texts, labels = read_wordnet_nouns(str(path))
    assert texts[1] == "word 4 0: gloss 4 0" and labels[:2] == [3, 4]
    seq = wordnet_supersenses(str(path), num_tasks=2, classes_per_task=2, train_per_class=5, test_per_class=1,
                              seed=0)
    names = {n for t in seq.tasks for n in t.label_names}
    assert "noun.artifact" in names and "noun.Tops" not in names  # the largest classes are kept
    assert all(len(t.train) == 10 and len(t.test) == 2 for t in seq.tasks)


def test_wordnet_missing_file_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        read_wordnet_nouns(str(tmp_path / "nope"))


@pytest.mark.skipif(not __import__("os").path.isfile("/usr/share/wordnet/data.noun"), reason="wordnet-base absent")
def test_real_wordnet_sequence():
    seq = wordnet_supersenses(train_per_class=20, test_per_class=5, seed=0)
    assert len(seq) == 5 and seq.num_classes == 20
    assert all(t.num_labels == 4 and len(t.train) == 80 and len(t.test) == 20 for t in seq.tasks)
    assert len({g for t in seq.tasks for g in t.global_labels}) == 20


def samples(seq, split):
    """(text, global label) of every sample of ``split`` in ``seq``, sorted."""
    return sorted((text, t.global_labels[label]) for t in seq.tasks
                  for text, label in zip(getattr(t, split)["text"][:], getattr(t, split)["label"][:]))


@pytest.mark.skipif(not __import__("os").path.isfile("/usr/share/wordnet/data.noun"), reason="wordnet-base absent")
@pytest.mark.parametrize("seed", [0, 1])
def test_wordnet_10split_is_the_5_task_data_in_10_tasks(seed):
    """The long sequence holds exactly the 5-task sequence's samples, classes and class order: each task of 4
    classes cut into two of 2 (the samples are drawn per 4-class task, as in the 5-task tables)."""
    five = wordnet_supersenses(train_per_class=30, test_per_class=5, seed=seed)
    ten = wordnet_10split(train_per_class=30, test_per_class=5, seed=seed)
    assert len(ten) == 10 and ten.name == "wordnet_10split" and ten.global_label_names == five.global_label_names
    assert [g for t in ten.tasks for g in t.global_labels] == [g for t in five.tasks for g in t.global_labels]
    assert [t.label_names for t in ten.tasks[:2]] == [five.tasks[0].label_names[:2], five.tasks[0].label_names[2:]]
    for split in ("train", "test"):
        assert samples(ten, split) == samples(five, split)
    assert all(sorted(set(t.train["label"][:])) == [0, 1] for t in ten.tasks)


def test_split_tasks_errors():
    seq = class_incremental_split("toy", datasets.Dataset.from_dict({"text": list("abcdef"), "label": [0, 1, 2] * 2}),
                                  datasets.Dataset.from_dict({"text": list("xyz"), "label": [0, 1, 2]}),
                                  ["a", "b", "c"], 1, None)
    with pytest.raises(ValueError, match=re.escape("task 'task_0' has 3 classes, which do not cut into 2 equal tasks; "
                                                   "pick a divisor of the classes per task.")):
        split_tasks(seq, 2)
    assert [t.global_labels for t in split_tasks(seq, 3).tasks] == [[0], [1], [2]]


def test_split_tasks_per_task_counts():
    """One count per task: the first task kept whole (its samples and local labels unchanged), the second cut in two;
    tasks renamed in order. A count list of the wrong length names both lengths."""
    seq = class_incremental_split("toy", datasets.Dataset.from_dict({"text": list("abcdefgh"), "label": [0, 1, 2, 3] * 2}),
                                  datasets.Dataset.from_dict({"text": list("wxyz"), "label": [0, 1, 2, 3]}),
                                  ["a", "b", "c", "d"], 2, None)
    out = split_tasks(seq, [1, 2])
    assert [t.name for t in out.tasks] == ["task_0", "task_1", "task_2"] and out.name == "toy_3tasks"
    assert [t.global_labels for t in out.tasks] == [seq.tasks[0].global_labels, *([g] for g in seq.tasks[1].global_labels)]
    assert out.tasks[0].train["text"][:] == seq.tasks[0].train["text"][:]
    assert out.tasks[0].train["label"][:] == seq.tasks[0].train["label"][:]
    assert out.description["split_tasks"] == [1, 2]
    for split in ("train", "test"):
        assert samples(out, split) == samples(seq, split)
    with pytest.raises(ValueError, match=re.escape("parts=[1, 2, 2] gives 3 counts for 2 tasks; give one per task "
                                                   "(or one number for all).")):
        split_tasks(seq, [1, 2, 2])

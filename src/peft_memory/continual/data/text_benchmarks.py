"""Text task sequences: the five-dataset benchmark and the offline WordNet supersense sequence.

Five-dataset benchmark (de Masson d'Autume et al. 2019; sampled setting of IDBR, Huang et al. 2021): AG News (4),
Yelp Review Full (5), Amazon Review Full (5, Zhang et al. 2015), DBPedia-14 (14), Yahoo Answers (10). Yelp and
Amazon share one 5-class sentiment label space: 33 classes in all. Every hub id and column is configurable
(:data:`TEXT_SOURCES`); ``hub_id`` may also be a local folder of data files that ``datasets.load_dataset`` reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import numpy as np

from .tasks import Task, TaskSequence, class_incremental_split, sample_per_class, split_tasks


@dataclass(frozen=True)
class TextSource:
    """Where one text dataset lives and how to read it.

    Attributes:
        hub_id: ``datasets.load_dataset`` path (hub id or local folder).
        text_columns: columns joined with a space into the input text.
        label_column: integer label column.
        label_names: class names in label order.
        label_space: tasks with the same label space share global labels (``None``: own classes).
        label_offset: added to the stored label (``-1`` for 1-based CSV labels).
        test_split: split used as the test set.
    """

    hub_id: str
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    label_space: str | None = None
    label_offset: int = 0
    test_split: str = "test"


_STARS = ("1 star", "2 stars", "3 stars", "4 stars", "5 stars")
TEXT_SOURCES: dict[str, TextSource] = {
    "ag_news": TextSource("fancyzhx/ag_news", ("text",), "label", ("World", "Sports", "Business", "Sci/Tech")),
    "yelp": TextSource("Yelp/yelp_review_full", ("text",), "label", _STARS, label_space="sentiment"),
    # Zhang et al. 2015 "Amazon Review Full" as CSV (1-based class index). No canonical hub id: check the schema
    # of this copy when online and override the source if it differs.
    "amazon": TextSource(
        "yassiracharki/Amazon_Reviews_for_Sentiment_Analysis_fine_grained_5_classes",
        ("review_title", "review_text"),
        "class_index",
        _STARS,
        label_space="sentiment",
        label_offset=-1,
    ),
    "dbpedia": TextSource(
        "fancyzhx/dbpedia_14",
        ("title", "content"),
        "label",
        ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
         "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"),
    ),
    "yahoo": TextSource(
        "community-datasets/yahoo_answers_topics",
        ("question_title", "question_content", "best_answer"),
        "topic",
        ("Society & Culture", "Science & Mathematics", "Health", "Education & Reference", "Computers & Internet",
         "Sports", "Business & Finance", "Entertainment & Music", "Family & Relationships", "Politics & Government"),
    ),
}

#: Task orders 4-7 of IDBR / SLM.
TEXT_ORDERS: dict[int, tuple[str, ...]] = {
    4: ("ag_news", "yelp", "amazon", "yahoo", "dbpedia"),
    5: ("yelp", "yahoo", "amazon", "dbpedia", "ag_news"),
    6: ("dbpedia", "yahoo", "ag_news", "amazon", "yelp"),
    7: ("yelp", "ag_news", "dbpedia", "amazon", "yahoo"),
}


def _read_text(source: TextSource, split: str, cache_dir: str | None) -> datasets.Dataset:
    ds = datasets.load_dataset(source.hub_id, split=split, cache_dir=cache_dir)
    missing = [c for c in (*source.text_columns, source.label_column) if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{source.hub_id} ({split}) has no column(s) {missing}; it has {ds.column_names}. "
            "Override its TextSource (text_columns / label_column)."
        )

    def convert(batch):
        texts = [" ".join(str(p) for p in parts if p) for parts in zip(*(batch[c] for c in source.text_columns))]
        return {"text": texts, "label": [int(x) + source.label_offset for x in batch[source.label_column]]}

    return ds.map(convert, batched=True, remove_columns=ds.column_names)


def five_dataset_text(
    order: int = 4,
    train_per_class: int | None = 2000,
    test_per_class: int | None = None,
    seed: int = 0,
    sources: dict[str, TextSource] | None = None,
    cache_dir: str | None = None,
) -> TaskSequence:
    """The five-dataset text benchmark in IDBR/SLM order ``order`` (4-7).

    Args:
        order: task order, one of :data:`TEXT_ORDERS`.
        train_per_class: training examples per class (IDBR: 2000); ``None`` keeps all.
        test_per_class: test examples per class; ``None`` (default) keeps the full test sets, as IDBR.
        seed: seed of the per-class sampling.
        sources: overrides of :data:`TEXT_SOURCES`, e.g. local copies.

    Raises:
        ValueError: for an unknown order or a dataset missing its columns.
    """
    if order not in TEXT_ORDERS:
        raise ValueError(f"order={order!r} is not one of {sorted(TEXT_ORDERS)} (IDBR/SLM orders).")
    sources = {**TEXT_SOURCES, **(sources or {})}
    names: list[str] = []
    spaces: dict[str, list[int]] = {}
    tasks = []
    for k, task_name in enumerate(TEXT_ORDERS[order]):
        src = sources[task_name]
        key = src.label_space or task_name
        if key not in spaces:
            spaces[key] = list(range(len(names), len(names) + len(src.label_names)))
            names.extend(src.label_names)
        train = sample_per_class(_read_text(src, "train", cache_dir), train_per_class, seed + k)
        test = sample_per_class(_read_text(src, src.test_split, cache_dir), test_per_class, seed + k)
        tasks.append(Task(task_name, list(src.label_names), train, test, spaces[key]))
    return TaskSequence(f"five_dataset_order{order}", tasks, names)


# ----------------------------------------------------------------------------------------------- WordNet
#: WordNet lexicographer file numbers of noun supersenses (``lexnames``).
NOUN_SUPERSENSES = {
    3: "Tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body", 9: "cognition",
    10: "communication", 11: "event", 12: "feeling", 13: "food", 14: "group", 15: "location", 16: "motive",
    17: "object", 18: "person", 19: "phenomenon", 20: "plant", 21: "possession", 22: "process", 23: "quantity",
    24: "relation", 25: "shape", 26: "state", 27: "substance", 28: "time",
}
WORDNET_PATHS = ("/usr/share/wordnet/data.noun", os.path.expanduser("~/nltk_data/corpora/wordnet/data.noun"))


def read_wordnet_nouns(path: str | None = None) -> tuple[list[str], list[int]]:
    """Read ``data.noun``: one ``"lemma: gloss"`` text and its supersense (lexicographer file number) per synset.

    Raises:
        FileNotFoundError: if no ``data.noun`` is found (install Debian's ``wordnet-base`` or pass the path).
    """
    candidates = [path] if path else list(WORDNET_PATHS)
    found = next((p for p in candidates if p and os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(
            f"WordNet data.noun not found at {candidates}; install it with `apt-get install wordnet-base` or pass "
            "--wordnet_path to an NLTK WordNet copy's data.noun."
        )
    texts, labels = [], []
    with open(found, encoding="utf-8") as f:
        for line in f:
            if line.startswith(" ") or " | " not in line:
                continue
            fields, gloss = line.split(" | ", 1)
            parts = fields.split()
            texts.append(f"{parts[4].replace('_', ' ')}: {gloss.strip()}")
            labels.append(int(parts[1]))
    return texts, labels


def wordnet_supersenses(
    path: str | None = None,
    num_tasks: int = 5,
    classes_per_task: int = 4,
    train_per_class: int | None = 400,
    test_per_class: int | None = 100,
    seed: int = 0,
) -> TaskSequence:
    """Class-incremental WordNet noun supersense classification: the ``num_tasks * classes_per_task`` largest
    supersenses, class order fixed by ``seed``, split into tasks of ``classes_per_task`` classes.

    Each example is ``"lemma: gloss"`` of one noun synset; labels are supersenses (``noun.artifact``, ...).
    """
    texts, lexnums = read_wordnet_nouns(path)
    counts = np.bincount(lexnums)
    n_classes = num_tasks * classes_per_task
    largest = sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c))[:n_classes]
    if len(largest) < n_classes:
        raise ValueError(f"WordNet has only {len(largest)} supersenses; ask for fewer tasks or classes.")
    class_of = {c: i for i, c in enumerate(largest)}
    keep = [i for i, c in enumerate(lexnums) if c in class_of]
    full = datasets.Dataset.from_dict(
        {"text": [texts[i] for i in keep], "label": [class_of[lexnums[i]] for i in keep]}
    )
    # A fixed, seed-dependent 80/20 train/test split before sampling per class.
    parts = full.train_test_split(test_size=0.2, seed=seed)
    names = [f"noun.{NOUN_SUPERSENSES.get(c, c)}" for c in largest]
    return class_incremental_split(
        "wordnet_5split" if num_tasks == 5 else f"wordnet_{num_tasks}split",
        parts["train"], parts["test"], names, num_tasks, seed, train_per_class, test_per_class,
    )


def wordnet_10split(path: str | None = None, train_per_class: int | None = 400, test_per_class: int | None = 100,
                    seed: int = 0) -> TaskSequence:
    """WordNet in 10 tasks of 2 classes: :func:`wordnet_supersenses`' 5 x 4 sequence (the same 20 supersenses,
    class order and samples, drawn per 4-class task as there) with each task cut in two (:func:`split_tasks`), so
    the final class-incremental accuracy compares directly with the 5-task table's."""
    five = wordnet_supersenses(path, 5, 4, train_per_class, test_per_class, seed)
    return split_tasks(five, 2, "wordnet_10split")


__all__ = ["TEXT_ORDERS", "TEXT_SOURCES", "TextSource", "five_dataset_text", "wordnet_10split", "wordnet_supersenses"]

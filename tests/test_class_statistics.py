"""Class statistics: exact composition across separately saved adapters, strict safetensors files, the classifiers
against plain references, the held-out split, and the validation counts that choose hyper-parameters."""

import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from peft_memory.class_statistics import (
    STATISTICS_FILE,
    ClassStatistics,
    GaussianClassifier,
    NearestMean,
    RandomProjection,
    RidgeClassifier,
    StatisticsAccumulator,
    Validation,
    predicted_labels,
)
from peft_memory.continual.inference.statistics import StatisticsSpace, collect_statistics, held_out_rows


def data(seed=0, n=60, d=6, classes=(0, 1, 2, 3, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % len(classes)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + torch.randn(len(classes), d, generator=g)[y] * 3
    return x, y


def stats_of(x, local, labels):
    acc = StatisticsAccumulator(labels, x.shape[1])
    for part in torch.split(torch.arange(len(x)), 7):  # streamed in batches
        acc.add(x[part], local[part])
    return acc.statistics()


def test_statistics_match_a_direct_computation():
    x, y = data()
    s = stats_of(x, y, list(range(6)))
    for c in range(6):
        torch.testing.assert_close(s.means[c], x[y == c].mean(0))
    scatter = sum((x[y == c] - x[y == c].mean(0)).T @ (x[y == c] - x[y == c].mean(0)) for c in range(6))
    torch.testing.assert_close(s.scatter, scatter)
    assert s.counts.tolist() == [10.0] * 6


def test_separately_saved_tasks_compose_to_the_statistics_of_all_the_data(tmp_path):
    x, y = data()
    whole = stats_of(x, y, list(range(6)))
    parts = []
    for t, classes in enumerate(([0, 1], [2, 3], [4, 5])):
        rows = torch.isin(y, torch.tensor(classes))
        local = torch.tensor([classes.index(c) for c in y[rows].tolist()])
        folder = tmp_path / f"task_{t}"
        folder.mkdir()
        stats_of(x[rows], local, classes).save(str(folder))
        parts.append(ClassStatistics.load(str(folder)))
    composed = ClassStatistics.compose(parts)
    assert composed.labels.tolist() == [0, 1, 2, 3, 4, 5]
    for name in ("counts", "means", "scatter"):
        torch.testing.assert_close(getattr(composed, name), getattr(whole, name), rtol=0, atol=1e-5)
    torch.testing.assert_close(composed.covariance(), whole.scatter / (60 - 6), rtol=0, atol=1e-5)
    # any subset composes too, in any order
    sub = ClassStatistics.compose([parts[2], parts[0]])
    assert sub.labels.tolist() == [4, 5, 0, 1]


def test_tasks_sharing_a_class_pool_it_exactly():
    """Yelp and Amazon share a label space: two parts of one class compose to the class as a whole."""
    x, y = data()
    first, second = torch.arange(60) < 30, torch.arange(60) >= 30
    a = stats_of(x[first], y[first], list(range(6)))
    b = stats_of(x[second], y[second], list(range(6)))
    whole = stats_of(x, y, list(range(6)))
    pooled = ClassStatistics.compose([a, b])
    for name in ("labels", "counts", "means", "scatter"):
        torch.testing.assert_close(getattr(pooled, name), getattr(whole, name), rtol=0, atol=1e-9)


def test_save_load_round_trip_is_exact_and_strict(tmp_path):
    x, y = data()
    s = stats_of(x, y, [3, 1, 4, 5, 9, 2])
    s.validation = {"shrinkage": Validation([0.1, 0.3], torch.tensor([4.0, 7.0], dtype=torch.float64), 9.0)}
    s.calibration = torch.tensor([-3.0, 2.0], dtype=torch.float64)
    path = s.save(str(tmp_path))
    back = ClassStatistics.load(str(tmp_path))
    for name in ("labels", "counts", "means", "scatter", "calibration"):
        assert torch.equal(getattr(back, name), getattr(s, name)), name
    assert back.validation["shrinkage"].grid == [0.1, 0.3] and back.validation["shrinkage"].best() == 0.3
    tensors = load_file(path)
    save_file({**tensors, "extra": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"holds .*'extra'.*expected"):
        ClassStatistics.load(str(tmp_path))
    save_file({**tensors, "scatter": torch.zeros(3, 3, dtype=torch.float64)}, path)
    with pytest.raises(ValueError, match=re.escape("is not valid class statistics: scatter has shape (3, 3) (expected "
                                                   "(6, 6); means (6, 6))")):
        ClassStatistics.load(str(tmp_path))
    with open(path, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(ValueError, match="corrupted or truncated"):
        ClassStatistics.load(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"{STATISTICS_FILE} is missing"):
        ClassStatistics.load(str(tmp_path / "nowhere"))


def test_classifiers_against_plain_references():
    x, y = data()
    s = stats_of(x, y, list(range(6)))
    q = x[:9]
    protos = torch.nn.functional.normalize(s.means, dim=-1)
    torch.testing.assert_close(NearestMean(s).scores(q), torch.nn.functional.normalize(q, dim=-1) @ protos.T)
    sigma = s.scatter / (60 - 6)
    g = 0.3
    precision = torch.linalg.inv(0.7 * sigma + g * torch.trace(sigma) / 6 * torch.eye(6, dtype=torch.float64))
    expected = q @ precision @ s.means.T - 0.5 * torch.einsum("cd,de,ce->c", s.means, precision, s.means)
    torch.testing.assert_close(GaussianClassifier(s, g).scores(q), expected)
    onehot = torch.nn.functional.one_hot(y, 6).to(torch.float64)
    ridge = torch.linalg.solve(x.T @ x + 5.0 * torch.eye(6, dtype=torch.float64), x.T @ onehot)
    torch.testing.assert_close(RidgeClassifier(s, 5.0).scores(q), q @ ridge)
    with pytest.raises(ValueError, match=r"shrinkage must lie in \[0, 1\]"):
        GaussianClassifier(s, 1.5)


def test_random_projection_is_fixed_by_its_seed():
    a, b = RandomProjection(6, 32, seed=3), RandomProjection(6, 32, seed=3)
    x = torch.randn(4, 6)
    assert torch.equal(a(x), b(x)) and (a(x) >= 0).all() and a(x).shape == (4, 32)
    assert not torch.equal(a(x), RandomProjection(6, 32, seed=4)(x))


def test_held_out_rows_per_class_and_reproducible():
    labels = [0] * 30 + [1] * 10 + [2] * 3
    rows = held_out_rows(labels, 0.1, seed=5)
    assert np.array_equal(rows, held_out_rows(labels, 0.1, seed=5))
    picked = np.asarray(labels)[rows]
    assert (picked == 0).sum() == 3 and (picked == 1).sum() == 1 and (picked == 2).sum() == 0  # keeps 2 per class
    assert len(held_out_rows(labels, 0.0, seed=5)) == 0


def test_validation_counts_score_each_candidate_on_held_out_samples():
    x, y = data()
    fit, held = torch.arange(60) < 48, torch.arange(60) >= 48
    space = StatisticsSpace()
    out = collect_statistics(list(range(6)), [space], (x[fit], y[fit]), (x[held], y[held]), {})
    v = out[space.filename].validation["shrinkage"]
    fitted = stats_of(x[fit], y[fit], list(range(6)))
    for value, correct in zip(v.grid, v.correct.tolist()):
        pred = GaussianClassifier(fitted, value).scores(x[held]).argmax(-1)
        assert correct == float((pred == y[held]).sum())
    assert v.total == 12 and out[space.filename].counts.sum() == 60  # the held-out samples join afterwards
    combined = v + v
    assert combined.total == 24 and torch.equal(combined.correct, 2 * v.correct)
    with pytest.raises(ValueError, match="validation grids"):
        v + Validation([1.0], torch.zeros(1), 1.0)


@pytest.mark.parametrize("chunk", [1, 6, 13, 1 << 22])
def test_predicted_labels_in_chunks_equal_one_pass(monkeypatch, chunk):
    """Held-out validation scores its samples in chunks of SCORE_CHUNK_ELEMENTS // C rows (memory bounded as
    samples and classes grow together): the predictions equal one (n, C) pass exactly, for every classifier, with
    a chunk of one row, a ragged last chunk, and one chunk."""
    import peft_memory.class_statistics as cs

    x, y = data(n=61)
    labels = [10, 3, 7, 0, 12, 5]
    s = stats_of(x, y, labels)
    monkeypatch.setattr(cs, "SCORE_CHUNK_ELEMENTS", chunk)
    for classifier in (NearestMean(s), GaussianClassifier(s, 0.2), RidgeClassifier(s, 1.0)):
        expected = s.labels[classifier.scores(x).argmax(-1)]
        assert torch.equal(predicted_labels(classifier, x), expected)
    assert predicted_labels(NearestMean(s), x[:0]).shape == (0,)


def test_compose_errors():
    with pytest.raises(ValueError, match="no class statistics to compose"):
        ClassStatistics.compose([])
    x, y = data()
    a = stats_of(x, y, list(range(6)))
    b = stats_of(x[:, :4], y, list(range(6, 12)))
    with pytest.raises(ValueError, match="feature sizes"):
        ClassStatistics.compose([a, b])
    acc = StatisticsAccumulator([6, 7], 2)
    acc.add(torch.ones(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"classes \[7\] have no training sample"):
        acc.statistics()


CORRUPTIONS = {  # name -> (tensor, how): every one must be refused by name, never loaded as something else
    "nan": lambda t, g: t["means"].view(-1).__setitem__(int(torch.randint(t["means"].numel(), (1,), generator=g)),
                                                      float("nan")),
    "inf": lambda t, g: t["scatter"].view(-1).__setitem__(int(torch.randint(t["scatter"].numel(), (1,), generator=g)),
                                                        float("inf")),
    "neg_inf_count": lambda t, g: t["counts"].__setitem__(0, float("-inf")),
    "float32": lambda t, g: t.__setitem__("means", t["means"].float()),
    "int32_labels": lambda t, g: t.__setitem__("labels", t["labels"].int()),
    "float_labels": lambda t, g: t.__setitem__("labels", t["labels"].double()),
    "half_scatter": lambda t, g: t.__setitem__("scatter", t["scatter"].half()),
    "row_dropped": lambda t, g: t.__setitem__("means", t["means"][1:].contiguous()),
    "column_dropped": lambda t, g: t.__setitem__("scatter", t["scatter"][:, 1:].contiguous()),
    "flat_means": lambda t, g: t.__setitem__("means", t["means"].reshape(-1).contiguous()),
    "count_missing": lambda t, g: t.__setitem__("counts", t["counts"][:-1].contiguous()),
    "duplicate_label": lambda t, g: t["labels"].__setitem__(1, int(t["labels"][0])),
    "negative_label": lambda t, g: t["labels"].__setitem__(0, -1),
    "zero_count": lambda t, g: t["counts"].__setitem__(2, 0.0),
    "fractional_count": lambda t, g: t["counts"].__setitem__(3, 2.5),
    "asymmetric": lambda t, g: t["scatter"].__setitem__((0, 1), float(t["scatter"][0, 1]) + 1.0),
    "negative_variance": lambda t, g: t["scatter"].__setitem__((2, 2), -1.0),
    "calibration_spread": lambda t, g: t["calibration"].__setitem__(1, 0.0),
    "calibration_shape": lambda t, g: t.__setitem__("calibration", torch.zeros(3, dtype=torch.float64)),
    "validation_above_total": lambda t, g: t["validation.shrinkage.correct"].__setitem__(0, 100.0),
    "validation_grid_nan": lambda t, g: t["validation.shrinkage.grid"].__setitem__(0, float("nan")),
    "validation_total_negative": lambda t, g: t["validation.shrinkage.total"].__setitem__(0, -1.0),
}


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_corrupted_statistics_files_are_refused_by_name(tmp_path, seed):
    """Random corruptions (NaN, Inf, shapes, dtypes, labels, counts, scatter, calibration, validation counts), alone
    and two at a time, of a saved statistics file: each load is a ValueError naming the file and what is wrong;
    the untouched file loads back exactly."""
    g = torch.Generator().manual_seed(seed)
    x, y = data(seed)
    s = stats_of(x, y, [3, 1, 4, 5, 9, 2])
    s.validation = {"shrinkage": Validation([0.1, 0.3], torch.tensor([4.0, 7.0], dtype=torch.float64), 9.0)}
    s.calibration = torch.tensor([-3.0, 2.0], dtype=torch.float64)
    path = s.save(str(tmp_path))
    clean = load_file(path)
    names = sorted(CORRUPTIONS)
    order = torch.randperm(len(names), generator=g).tolist()
    cases = [[names[i]] for i in order] + [[names[a], names[b]] for a, b in zip(order, order[1:] + order[:1])]
    for case in cases:
        tensors = {k: v.clone() for k, v in clean.items()}
        for name in case:
            CORRUPTIONS[name](tensors, g)
        save_file(tensors, path)
        with pytest.raises(ValueError, match=re.escape(f"{path} is not valid class statistics: ")) as err:
            ClassStatistics.load(str(tmp_path))
        assert "retrain the task" in str(err.value), case
    save_file(clean, path)
    back = ClassStatistics.load(str(tmp_path))
    assert all(torch.equal(getattr(back, k), getattr(s, k)) for k in ("labels", "counts", "means", "scatter"))


def test_a_query_of_another_size_is_named():
    x, y = data()
    s = stats_of(x, y, [0, 1, 2, 3, 4, 5])
    for classifier in (NearestMean(s), GaussianClassifier(s, 0.5), RidgeClassifier(s, 1.0)):
        with pytest.raises(ValueError, match=re.escape("the class statistics are of 6 features, the model's query has "
                                                       "7: they were computed with another base model")):
            classifier.scores(torch.zeros(2, 7))


def test_a_singular_covariance_falls_back_to_some_shrinkage_and_says_so():
    """Fewer samples than features: at shrinkage 0 the covariance cannot be inverted; the classifier uses
    SINGULAR_SHRINKAGE with a warning (it used to raise LinAlgError), the same as asking for it."""
    from peft_memory.class_statistics import SINGULAR_SHRINKAGE

    x, y = data(n=12, d=40)
    s = stats_of(x, y, [0, 1, 2, 3, 4, 5])
    with pytest.warns(UserWarning, match=re.escape("singular at shrinkage 0.0 (fewer samples than features, or "
                                                   f"constant features); used shrinkage {SINGULAR_SHRINKAGE}")):
        fallback = GaussianClassifier(s, 0.0)
    asked = GaussianClassifier(s, SINGULAR_SHRINKAGE)
    torch.testing.assert_close(fallback.scores(x), asked.scores(x), rtol=0, atol=0)

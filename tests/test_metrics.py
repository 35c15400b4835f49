import math

import numpy as np
import pytest

from peft_memory.continual.inference.metrics import (
    accuracy_curve,
    average_accuracy,
    backward_transfer,
    forgetting,
    summarize,
)

NAN = float("nan")
# A[i, j]: accuracy on task i after training task j.
A = [[0.9, 0.8, 0.6],
     [NAN, 0.7, 0.7],
     [NAN, NAN, 0.5]]


def test_average_accuracy_is_unweighted_mean_of_last_column():
    assert average_accuracy(A) == pytest.approx((0.6 + 0.7 + 0.5) / 3)


def test_accuracy_curve_is_the_average_accuracy_after_each_task():
    assert accuracy_curve(A) == pytest.approx([0.9, (0.8 + 0.7) / 2, (0.6 + 0.7 + 0.5) / 3])
    assert accuracy_curve(A)[-1] == average_accuracy(A)


def test_forgetting_uses_max_over_all_seen_steps():
    # task 0: max(0.9, 0.8, 0.6) - 0.6 = 0.3; task 1: max(0.7, 0.7) - 0.7 = 0
    assert forgetting(A) == pytest.approx(0.15)
    # the max includes intermediate steps, not only the diagonal
    B = [[0.5, 0.9, 0.4], [NAN, 0.6, 0.6], [NAN, NAN, 0.3]]
    assert forgetting(B) == pytest.approx(((0.9 - 0.4) + 0.0) / 2)


def test_backward_transfer():
    assert backward_transfer(A) == pytest.approx(((0.6 - 0.9) + (0.7 - 0.7)) / 2)
    positive = [[0.5, 0.7], [NAN, 0.8]]
    assert backward_transfer(positive) == pytest.approx(0.2)
    assert forgetting(positive) == 0.0


def test_single_task_and_summary():
    assert summarize([[0.42]]) == {"average_accuracy": 0.42, "forgetting": 0.0, "backward_transfer": 0.0}
    s = summarize(np.array(A) * 100)  # percent works too
    assert s["forgetting"] == pytest.approx(15.0) and not math.isnan(s["average_accuracy"])


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [[[1.0]]]])
def test_non_square_matrix_is_refused(bad):
    with pytest.raises(ValueError, match="accuracy matrix must be square"):
        average_accuracy(bad)


def test_prediction_metrics_on_a_hand_made_case():
    from peft_memory.continual.inference.metrics import prediction_metrics

    truth = ["a", "a", "a", "b", "b", "c", "d"]
    pred = ["a", "b", "b", "b", "a", "c", "a"]
    m = prediction_metrics(truth, pred, ["a", "b", "c"])
    assert m["classes"] == ["a", "b", "c", "d"]  # 'd' is not a class of the run: listed last, never predicted
    assert m["accuracy"] == 3 / 7 and m["num_inputs"] == 7
    assert m["per_class_accuracy"] == {"a": 1 / 3, "b": 1 / 2, "c": 1.0, "d": 0.0}
    assert m["confusions"] == [["a", "b", 2], ["b", "a", 1], ["d", "a", 1]]
    assert m["confusion_matrix"] == [[1, 2, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    assert prediction_metrics([], [], ["a"])["accuracy"] is None


def test_prediction_metrics_of_many_classes_stay_linear():
    """4,000 classes: no (C, C) matrix is built (a dense one would be 16 million cells), the mistakes are listed."""
    from peft_memory.continual.inference.metrics import DENSE_CONFUSION_CLASSES, prediction_metrics

    classes = [f"c{i}" for i in range(4000)]
    truth = classes * 2
    pred = [c if i % 4 else classes[(i + 1) % 4000] for i, c in enumerate(truth)]
    m = prediction_metrics(truth, pred, classes)
    assert len(classes) > DENSE_CONFUSION_CLASSES and m["confusion_matrix"] is None
    assert m["accuracy"] == 0.75 and len(m["confusions"]) == 1000 and sum(e[2] for e in m["confusions"]) == 2000

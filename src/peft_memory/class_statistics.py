"""Class statistics of the frozen backbone's query feature, saved per task adapter and composed across any subset.

After a task is trained, the trainer streams its training data once through the frozen model (adapters disabled)
and accumulates, in float64, per class ``c`` the count ``n_c`` and the sum of the query features, and over the
task the Gram matrix ``sum_x x x^T``. :class:`ClassStatistics` keeps the per-class means ``mu_c`` and counts, and the
task's within-class scatter ``S_t = sum_c sum_{x in c} (x - mu_c)(x - mu_c)^T``. Nothing of the data is kept, and the
statistics of tasks ``t_1 .. t_k`` compose exactly: the shared (pooled) covariance over them is
``sum_t S_t / (N - C)`` (``N`` samples, ``C`` classes) -- the class statistics of HiDe-Prompt (Wang et al. NeurIPS
2023) and RanPAC (McDonnell et al. NeurIPS 2023), and SimpleCIL's prototypes (Zhou et al. 2023).

Two training-free classifiers read them (each returns class scores ``(batch, C)``):

- :class:`NearestMean`: cosine similarity to the L2-normalised class means (SimpleCIL).
- :class:`GaussianClassifier`: linear discriminant with the shared covariance shrunk towards its mean eigenvalue,
  ``Sigma_g = (1 - g) Sigma + g (tr(Sigma) / d) I``; ``score_c = x^T P mu_c - mu_c^T P mu_c / 2`` with
  ``P = Sigma_g^{-1}`` (Friedman 1989's regularised discriminant analysis). Its softmax is the class posterior under
  equal priors; summed over a task's classes, the task posterior.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

STATISTICS_FILE = "class_statistics.safetensors"
#: Shrinkage the Gaussian classifier falls back to when the covariance cannot be inverted at the one asked for.
SINGULAR_SHRINKAGE = 1e-3
_KEYS = ("labels", "counts", "means", "scatter")


@dataclass
class Validation:
    """How many held-out training samples each candidate value of a hyper-parameter classified correctly.

    When task ``t``'s statistics are computed, a fraction of each of its classes is held out; the classifier built
    from the earlier tasks' statistics and the rest of task ``t``'s is scored on them, over every class seen so far,
    once per candidate. The counts add up over tasks, so any subset of adapters chooses its own value
    (:meth:`best`) from training data only, never from the test set.

    Attributes:
        grid: the candidate values, ``G`` floats.
        correct: ``(G,)`` float64, held-out samples classified correctly under each candidate.
        total: held-out samples scored.
    """

    grid: list[float]
    correct: torch.Tensor
    total: float

    def __add__(self, other: Validation) -> Validation:
        if list(self.grid) != list(other.grid):
            raise ValueError(f"validation grids {self.grid} and {other.grid} differ; the adapters were trained with "
                             "other settings.")
        return Validation(list(self.grid), self.correct + other.correct, self.total + other.total)

    def best(self) -> float:
        """The candidate with the most correct held-out samples (the first of ties)."""
        return float(self.grid[int(torch.argmax(self.correct))])

    def accuracy(self) -> list[float]:
        """Held-out accuracy of each candidate (``nan`` with no held-out sample)."""
        return [float(c) / self.total if self.total else float("nan") for c in self.correct]


@dataclass
class ClassStatistics:
    """Statistics of one task's (or, composed, several tasks') classes.

    Attributes:
        labels: ``(C,)`` long, the global class id of each row.
        counts: ``(C,)`` float64, training samples per class.
        means: ``(C, d)`` float64, class means of the query feature.
        scatter: ``(d, d)`` float64, within-class scatter summed over the classes.
        validation: ``{hyper-parameter: Validation}``, the held-out evidence for choosing it (see
            :class:`Validation`).
        calibration: optional ``(2,)`` float64, the mean and spread of a score on held-out samples of this task
            (``--cil_rule combined``'s adapted statistics); per task, so composing drops it.
    """

    labels: torch.Tensor
    counts: torch.Tensor
    means: torch.Tensor
    scatter: torch.Tensor
    validation: dict[str, Validation] = field(default_factory=dict)
    calibration: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_samples(self) -> float:
        return float(self.counts.sum())

    def covariance(self) -> torch.Tensor:
        """The shared covariance ``S / (N - C)``, ``(d, d)`` float64.

        Raises:
            ValueError: with fewer samples than classes plus one.
        """
        dof = self.num_samples - len(self.labels)
        if dof < 1:
            raise ValueError(f"{int(self.num_samples)} samples of {len(self.labels)} classes: a covariance needs at "
                             "least one more sample than classes.")
        return self.scatter / dof

    @staticmethod
    def compose(parts: list[ClassStatistics]) -> ClassStatistics:
        """The statistics of the union of ``parts``: rows concatenated, scatters and validation counts added.

        A class in several parts (tasks sharing a label space) is pooled into one row: counts added, means weighted,
        and the spread between the parts' means added to the scatter, exactly as if one task had held all of it.

        Raises:
            ValueError: if ``parts`` is empty or the feature sizes differ.
        """
        if not parts:
            raise ValueError("no class statistics to compose; train or load at least one task adapter.")
        if len({p.dim for p in parts}) != 1:
            raise ValueError(f"class statistics of feature sizes {sorted({p.dim for p in parts})} cannot compose; "
                             "they come from different base models.")
        labels = torch.cat([p.labels for p in parts])
        counts = torch.cat([p.counts for p in parts])
        means = torch.cat([p.means for p in parts])
        scatter = sum(p.scatter for p in parts[1:]) + parts[0].scatter
        order = list(dict.fromkeys(labels.tolist()))  # classes in order of first appearance
        if len(order) != len(labels):  # tasks sharing classes (Yelp and Amazon): pool each shared class
            position = {c: i for i, c in enumerate(order)}
            index = torch.tensor([position[c] for c in labels.tolist()])
            pooled_counts = torch.zeros(len(order), dtype=counts.dtype).index_add_(0, index, counts)
            pooled = torch.zeros(len(order), means.shape[1], dtype=means.dtype).index_add_(
                0, index, means * counts[:, None]) / pooled_counts[:, None]
            offset = means - pooled[index]  # the spread between the parts of a shared class joins its scatter
            scatter = scatter + (offset * counts[:, None]).T @ offset
            labels, counts, means = torch.tensor(order, dtype=labels.dtype), pooled_counts, pooled
        validation = {}
        for part in parts:
            for name, v in part.validation.items():
                validation[name] = validation[name] + v if name in validation else v
        return ClassStatistics(labels, counts, means, scatter, validation)

    # ------------------------------------------------------------- files
    def save(self, folder: str, filename: str = STATISTICS_FILE) -> str:
        """Write ``folder/<filename>`` (default ``class_statistics.safetensors``); returns the path."""
        path = os.path.join(folder, filename)
        tensors = {k: getattr(self, k).detach().cpu().contiguous() for k in _KEYS}
        if self.calibration is not None:
            tensors["calibration"] = self.calibration.detach().cpu().to(torch.float64).contiguous()
        for name, v in self.validation.items():
            tensors[f"validation.{name}.grid"] = torch.tensor(v.grid, dtype=torch.float64)
            tensors[f"validation.{name}.correct"] = v.correct.detach().cpu().to(torch.float64).contiguous()
            tensors[f"validation.{name}.total"] = torch.tensor([float(v.total)], dtype=torch.float64)
        save_file(tensors, path, metadata={"format": "peft_memory.class_statistics", "version": "1"})
        return path

    @classmethod
    def load(cls, folder: str, filename: str = STATISTICS_FILE) -> ClassStatistics:
        """Read ``folder/<filename>`` (safetensors only: nothing is unpickled), strictly.

        Raises:
            FileNotFoundError: the adapter was saved without class statistics (retrain the task).
            ValueError: the file is corrupted, a tensor is missing or unknown, or its values are not class
                statistics (:func:`_problems`: dtypes, shapes, NaN/Inf, labels, counts, scatter, validation counts).
        """
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: the adapter was saved without class statistics; retrain "
                                    "the task with `peft-memory train`.")
        try:
            with safe_open(path, framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path} is corrupted or truncated ({err}); retrain the task.") from err
        names = sorted({k.split(".")[1] for k in tensors if k.startswith("validation.")})
        expected = {*_KEYS, *(f"validation.{n}.{part}" for n in names for part in ("grid", "correct", "total")),
                    *(["calibration"] if "calibration" in tensors else [])}
        if set(tensors) != expected:
            raise ValueError(f"{path} holds {sorted(tensors)}, expected {sorted(expected)}; it was not written by "
                             "peft_memory.")
        problems = _problems(tensors, names)
        if problems:
            raise ValueError(f"{path} is not valid class statistics: {'; '.join(problems)}. It was changed after "
                             "peft_memory wrote it: retrain the task (or restore the file).")
        validation = {n: Validation(tensors[f"validation.{n}.grid"].tolist(), tensors[f"validation.{n}.correct"],
                                    float(tensors[f"validation.{n}.total"][0])) for n in names}
        return cls(*(tensors[k] for k in _KEYS), validation, tensors.get("calibration"))


def _problems(tensors: dict[str, torch.Tensor], validations: list[str]) -> list[str]:
    """What is wrong with the tensors of a class-statistics file (``[]``: nothing): dtypes, shapes, NaN/Inf, labels
    (unique, non-negative), counts (positive whole numbers), a symmetric scatter with a non-negative diagonal, a
    calibration ``(mean, spread > 0)``, validation counts between 0 and their total."""
    dtypes = {"labels": torch.int64, **{k: torch.float64 for k in tensors if k != "labels"}}
    wrong = [f"{k} is {t.dtype} (expected {dtypes[k]})" for k, t in tensors.items() if t.dtype != dtypes[k]]
    if wrong:
        return wrong
    labels, counts, means, scatter = (tensors[k] for k in _KEYS)
    if means.ndim != 2:
        return [f"means has shape {tuple(means.shape)} (expected (classes, features))"]
    c, d = means.shape
    shapes = {"labels": (c,), "counts": (c,), "scatter": (d, d), "calibration": (2,),
              **{f"validation.{n}.{p}": (len(tensors[f"validation.{n}.grid"]),) for n in validations
                 for p in ("grid", "correct")}, **{f"validation.{n}.total": (1,) for n in validations}}
    wrong = [f"{k} has shape {tuple(tensors[k].shape)} (expected {shape}; means {(c, d)})"
             for k, shape in shapes.items() if k in tensors and tuple(tensors[k].shape) != shape]
    if wrong:
        return wrong
    problems = [f"{k} holds NaN or Inf" for k, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
    if problems:
        return problems
    if c == 0:
        problems.append("it has no class")
    if len(set(labels.tolist())) != c or (labels < 0).any():
        problems.append(f"labels {labels.tolist()} are not distinct non-negative class ids")
    if (counts <= 0).any() or (counts != counts.round()).any():
        problems.append(f"counts {counts.tolist()} are not positive whole numbers of samples")
    tol = 1e-9 * float(scatter.abs().max().clamp(min=1)) if d else 0.0  # float64 rounding of gram - n mu mu^T
    if not torch.allclose(scatter, scatter.T, rtol=1e-9, atol=tol) or (scatter.diagonal() < -tol).any():
        problems.append("scatter is not a symmetric matrix with a non-negative diagonal")
    if "calibration" in tensors and not tensors["calibration"][1] > 0:
        problems.append(f"calibration spread {float(tensors['calibration'][1])} is not positive")
    for n in validations:
        correct, total = tensors[f"validation.{n}.correct"], float(tensors[f"validation.{n}.total"][0])
        if total < 0 or (correct < 0).any() or (correct > total).any() or (correct != correct.round()).any():
            problems.append(f"validation.{n} counts {correct.tolist()} do not lie between 0 and its total {total}")
    return problems


def check_feature_size(features: torch.Tensor, dim: int) -> None:
    """Raise ``ValueError`` when query ``features`` ``(batch, f)`` do not have the statistics' size ``dim``."""
    if features.shape[-1] != dim:
        raise ValueError(f"the class statistics are of {dim} features, the model's query has {features.shape[-1]}: "
                         "they were computed with another base model or --first_session_adaptation setting; load "
                         "the run with the base model and settings it was trained with.")


class StatisticsAccumulator:
    """Streams features into per-class sums and counts and a Gram matrix (float64), then gives
    :class:`ClassStatistics`.

    Args:
        labels: the task's global class ids, in the order of its local labels ``0..C-1``.
        dim: the feature size ``d``.
    """

    def __init__(self, labels: list[int], dim: int, device=None):
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        c = len(labels)
        self.sums = torch.zeros(c, dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(c, dtype=torch.float64, device=device)
        self.gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, features: torch.Tensor, local_labels: torch.Tensor) -> None:
        """Add a batch: ``features`` ``(batch, d)``, ``local_labels`` ``(batch,)`` in ``0..C-1``."""
        x = features.detach().to(self.sums.device, torch.float64)
        y = local_labels.to(self.sums.device)
        self.sums.index_add_(0, y, x)
        self.counts += torch.bincount(y, minlength=len(self.counts)).to(torch.float64)
        self.gram += x.T @ x

    def copy(self) -> StatisticsAccumulator:
        """An independent accumulator holding the same sums."""
        other = StatisticsAccumulator(self.labels.tolist(), self.sums.shape[1], device=self.sums.device)
        other.sums, other.counts, other.gram = self.sums.clone(), self.counts.clone(), self.gram.clone()
        return other

    def statistics(self) -> ClassStatistics:
        """Means, counts and within-class scatter ``gram - sum_c n_c mu_c mu_c^T``, on the CPU.

        Raises:
            ValueError: if a class received no sample.
        """
        empty = self.labels[self.counts.cpu() == 0].tolist()
        if empty:
            raise ValueError(f"classes {empty} have no training sample; class statistics need every class.")
        means = self.sums / self.counts[:, None]
        scatter = self.gram - (means * self.counts[:, None]).T @ means
        return ClassStatistics(self.labels.clone(), self.counts.cpu(), means.cpu(), scatter.cpu())


#: Rows scored together by :func:`predicted_labels`: their ``(rows, C)`` float64 scores hold at most this many
#: elements (32 MiB), whatever the number of classes ``C``.
SCORE_CHUNK_ELEMENTS = 1 << 22


def predicted_labels(classifier, features: torch.Tensor) -> torch.Tensor:
    """The global label of each row's best class under ``classifier`` (:class:`NearestMean`,
    :class:`GaussianClassifier` or :class:`RidgeClassifier`): ``(n, D)`` features -> ``(n,)`` labels.

    The rows are scored in chunks of :data:`SCORE_CHUNK_ELEMENTS` ``// C``, so memory stays bounded when the held-out
    samples and the classes grow together (2 held-out samples per class over 4,000 classes: 256 MB of scores at once).
    Equal to ``classifier.labels[classifier.scores(features).argmax(-1)]``.
    """
    step = max(1, SCORE_CHUNK_ELEMENTS // max(1, len(classifier.labels)))
    best = [classifier.scores(features[i : i + step]).argmax(-1).cpu() for i in range(0, len(features), step)]
    return classifier.labels[torch.cat(best)] if best else classifier.labels[:0]


class NearestMean:
    """SimpleCIL's classifier: cosine similarity to the L2-normalised class means (Zhou et al. 2023, Sec. 4)."""

    def __init__(self, stats: ClassStatistics):
        self.labels = stats.labels
        self.prototypes = F.normalize(stats.means, dim=-1)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """``(batch, C)`` cosine similarities, in the order of ``labels``."""
        check_feature_size(features, self.prototypes.shape[1])
        x = F.normalize(features.to(torch.float64), dim=-1)
        return x @ self.prototypes.to(x.device).T


class GaussianClassifier:
    """Linear discriminant analysis with a shared, shrunk covariance (see the module docstring).

    Args:
        stats: composed class statistics.
        shrinkage: ``g`` in ``[0, 1]``: ``0`` the sample covariance, ``1`` a scaled identity (nearest mean in
            Euclidean distance).
    """

    def __init__(self, stats: ClassStatistics, shrinkage: float):
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}.")
        sigma = stats.covariance()
        d = sigma.shape[0]
        target = torch.trace(sigma) / d * torch.eye(d, dtype=sigma.dtype)
        precision, used = None, shrinkage
        for used in dict.fromkeys((shrinkage, max(shrinkage, SINGULAR_SHRINKAGE))):
            shrunk = (1 - used) * sigma + used * target
            eig = torch.linalg.eigvalsh(shrunk)  # ascending; a singular matrix inverts to noise, not an error
            if eig[-1] > 0 and eig[0] > eig[-1] * 1e-12:
                precision = torch.linalg.inv(shrunk)
                break
        if precision is None:
            raise ValueError(f"the class statistics' covariance is degenerate (trace {float(torch.trace(sigma)):.3g}:"
                             " every feature constant?); check the features the statistics were computed from.")
        if used != shrinkage:
            warnings.warn(f"the shared covariance is singular at shrinkage {shrinkage} (fewer samples than "
                          f"features, or constant features); used shrinkage {used} instead.", stacklevel=2)
        self.labels = stats.labels
        self.weight = precision @ stats.means.T  # (d, C)
        self.bias = -0.5 * (stats.means * self.weight.T).sum(-1)  # (C,)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """``(batch, C)`` discriminant scores: log-likelihoods up to a shared constant (softmax = posterior)."""
        check_feature_size(features, self.weight.shape[0])
        x = features.to(torch.float64)
        return x @ self.weight.to(x.device) + self.bias.to(x.device)


class RidgeClassifier:
    """RanPAC's classifier (McDonnell et al. NeurIPS 2023, Eq. 4): ridge regression of one-hot targets on the
    features, ``W = (G + lambda I)^{-1} Q`` with the uncentred Gram ``G = sum_x x x^T`` and ``Q = sum_x x y^T``, both
    rebuilt from the class statistics (``G = S + sum_c n_c mu_c mu_c^T``, ``Q_c = n_c mu_c``).

    Args:
        stats: composed class statistics; ridge: ``lambda > 0``.
    """

    def __init__(self, stats: ClassStatistics, ridge: float):
        if not ridge > 0:
            raise ValueError(f"ridge must be positive, got {ridge}.")
        sums = stats.means * stats.counts[:, None]  # (C, d)
        gram = stats.scatter + sums.T @ stats.means
        self.labels = stats.labels
        self.weight = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype), sums.T)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """``(batch, C)`` regressed one-hot targets."""
        check_feature_size(features, self.weight.shape[0])
        x = features.to(torch.float64)
        return x @ self.weight.to(x.device)


class RandomProjection:
    """RanPAC's frozen random projection with a nonlinearity: ``h = ReLU(x W)``, ``W ~ N(0, 1)^{d x M}`` drawn from
    ``seed`` (the same ``W`` in every process and every session).

    Args:
        dim: the feature size ``d``; size: ``M``; seed: the generator's seed.
    """

    def __init__(self, dim: int, size: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.dim, self.size, self.seed = dim, size, seed
        self.weight = torch.randn(dim, size, generator=generator, dtype=torch.float64)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """``(batch, d)`` -> ``(batch, M)`` float64."""
        x = features.to(torch.float64)
        return torch.relu(x @ self.weight.to(x.device))

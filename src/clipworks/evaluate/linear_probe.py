"""Linear probe: scikit-learn logistic regression on frozen, L2-normalised image features.

The regularisation is chosen as in the CLIP paper (appendix A.3): ``C`` (= 1/λ) on 97 log-spaced values from
10⁻⁶ to 10⁶ (8 per decade), by a parametric binary search — fit at every second decade, then repeatedly look at
half the step either side of the best so far until the step is one grid point — scored by top-1 on a validation
split carved (stratified) from the training set. The classifier is then refit with that ``C`` on train +
validation and scored once on the test set. The test features are never seen before that last step:
``select_c`` does not take them. (CLIP_benchmark runs the same search over the weight decay of a torch linear
layer trained with AdamW; the metrics it reports — ``acc1``, ``acc5``, ``mean_per_class_recall`` — are these.)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import Encoder
from ..errors import UsageError, require
from ..progress import Progress
from .datasets import LabelledImages
from .features import load_or_encode

C_GRID = tuple(float(c) for c in np.logspace(-6, 6, 97))  # 8 steps per decade, as the CLIP paper's sweep
_FIRST_STEP = 16  # the search starts at C = 1e-6, 1e-4, …, 1e6
SEARCH_STEPS = len(C_GRID[::_FIRST_STEP]) + 3 * 4  # what the binary search reports to ``progress``: 7, then 3 a round


def _sklearn():
    return require("sklearn", "eval", "the linear probe (scikit-learn's LogisticRegression)")


def fit_logistic(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int = 1000, seed: int = 0):
    """A multinomial L2 logistic regression (L-BFGS), and whether it converged within ``max_iter``."""
    _sklearn()
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(features, labels)
    return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def class_scores(model, features: np.ndarray, num_classes: int) -> np.ndarray:
    """``[n, num_classes]`` probabilities; classes absent from the training labels score -1 (never predicted)."""
    scores = np.full((len(features), num_classes), -1.0)
    scores[:, model.classes_] = model.predict_proba(features)
    return scores


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """CLIP_benchmark's ``acc1``, ``acc5`` (None below 5 classes) and ``mean_per_class_recall`` (balanced accuracy:
    the mean recall over classes present in ``labels``) of ``[n, C]`` scores; ties go to the lower class id."""
    num_classes = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    pred = order[:, 0]
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    counts = confusion.sum(axis=1)
    present = counts > 0
    return {
        "acc1": float((pred == labels).mean()),
        "acc5": float((order == labels[:, None]).any(axis=1).mean()) if num_classes >= 5 else None,
        "mean_per_class_recall": float((np.diag(confusion)[present] / counts[present]).mean()),
        "confusion": confusion,
    }


def split_validation(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, validation indices) of a training set: a seeded, stratified split when every class has two
    or more samples, else a plain random one."""
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"validation fraction must be between 0 and 1, got {fraction}")
    _sklearn()
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    stratify = labels if np.bincount(labels).min(initial=2) >= 2 and len(np.unique(labels)) > 1 else None
    n_val = max(1, round(fraction * len(labels)))
    if stratify is not None and n_val < len(np.unique(labels)):
        stratify = None
    if n_val >= len(labels):
        raise UsageError(f"{len(labels)} training samples are too few to carve a validation split from")
    fit, val = train_test_split(index, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(val)


def select_c(fit_x: np.ndarray, fit_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
             cs: Sequence[float] | None = None, max_iter: int = 1000, seed: int = 0,
             progress: Progress | None = None) -> tuple[float, dict[float, float], list[float]]:
    """(best C, validation top-1 per C tried, Cs whose fit did not converge). ``cs`` given: each is tried, else the
    binary search over ``C_GRID``. Ties keep the smaller C (the stronger regularisation). ``progress`` advances
    ``len(cs)`` or ``SEARCH_STEPS`` in all."""
    tried: dict[float, float] = {}
    not_converged: list[float] = []

    def score(c: float) -> float:
        if c not in tried:
            model, converged = fit_logistic(fit_x, fit_y, c, max_iter, seed)
            tried[c] = float((model.predict(val_x) == val_y).mean())
            if not converged:
                not_converged.append(c)
        if progress:
            progress(1)  # per candidate looked at, fitted or remembered: the count is fixed in advance
        return tried[c]

    def best_of(candidates: Sequence[float], slots: int) -> float:
        ordered = sorted(candidates)
        accuracy = [score(c) for c in ordered]
        if progress and slots > len(ordered):
            progress(slots - len(ordered))  # a neighbour beyond the grid's end
        return ordered[accuracy.index(max(accuracy))]  # the first maximum: the smallest C

    if cs is not None:
        if not cs or any(not c > 0 for c in cs):
            raise UsageError(f"C values must be positive, got {list(cs)}")
        return best_of(list(cs), len(cs)), tried, not_converged
    peak = C_GRID.index(best_of(C_GRID[::_FIRST_STEP], 7))
    step = _FIRST_STEP // 2
    while step > 0:
        near = [C_GRID[i] for i in (peak - step, peak, peak + step) if 0 <= i < len(C_GRID)]
        peak = C_GRID.index(best_of(near, 3))
        step //= 2
    return C_GRID[peak], tried, not_converged


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, *, num_classes: int | None = None, val_fraction: float = 0.2,
                 cs: Sequence[float] | None = None, max_iter: int = 1000, seed: int = 0,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Choose C on a validation split of the training features, refit on all of them, score the test features."""
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise UsageError("features and labels differ in length")
    if len(test_labels) == 0:
        raise UsageError("the test split is empty")
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    if len(np.unique(train_labels)) < 2:
        raise UsageError("the training split holds a single class: nothing to learn")
    fit, val = split_validation(train_labels, val_fraction, seed)
    best, tried, not_converged = select_c(train_features[fit], train_labels[fit], train_features[val],
                                          train_labels[val], cs, max_iter, seed, progress)
    model, converged = fit_logistic(train_features, train_labels, best, max_iter, seed)
    if progress:
        progress(1)
    scored = classification_metrics(class_scores(model, test_features, num_classes), test_labels)
    confusion = scored.pop("confusion")
    return {
        "metrics": scored,
        "C": best,
        "validation": {"n_fit": len(fit), "n_val": len(val), "val_acc1": tried[best],
                       "search": {repr(c): acc for c, acc in sorted(tried.items())},
                       "not_converged": sorted(not_converged)},
        "final_fit_converged": converged,
        "n_train": len(train_labels),
        "n": len(test_labels),
        "confusion": confusion.tolist(),
    }


def evaluate_linear_probe(encoder: Encoder, train: LabelledImages, test: LabelledImages, *,
                          val_fraction: float = 0.2, cs: Sequence[float] | None = None, max_iter: int = 1000,
                          seed: int = 0, batch_size: int | None = None, workers: int = 2,
                          features_cache: str | Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Linear-probe metrics of ``encoder``'s image features: train on ``train``, report on ``test`` (same classes).
    ``features_cache`` (.npz) keeps the features for the next run with the same model and data."""
    _sklearn()
    if train.class_names != test.class_names:
        raise UsageError(f"train ({train.name}) and test ({test.name}) have different classes: "
                         f"{train.class_names[:6]} vs {test.class_names[:6]}")
    features = load_or_encode(features_cache, encoder, {"train": train, "test": test}, batch_size, workers, progress)
    tr, te = features["train"], features["test"]
    result = linear_probe(tr.features, tr.labels, te.features, te.labels, num_classes=len(train.class_names),
                          val_fraction=val_fraction, cs=cs, max_iter=max_iter, seed=seed, progress=progress)
    return {
        "task": "linear-probe",
        "model": {**encoder.ref.to_dict(), "describe": encoder.ref.describe()},
        "dataset": {"name": test.name, "train": train.name, "description": test.description,
                    "classes": test.class_names},
        "skipped": tr.skipped + te.skipped,
        **result,
    }

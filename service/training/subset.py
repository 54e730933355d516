"""`data.train_subset: N`: train on a small, stratified, seeded subset of the training split.

A small training set is a regime where the nets overfit (claims 2 and 3). The subset is taken
after the train/validation split, from the training indices only, so the validation set is the
same with or without it. It is scikit-learn's
`resample(replace=False, n_samples=N, stratify=labels, random_state=seed)`:
every class gets its share of N rounded down or up (so within one image of its proportion),
any N from 1 to the split's size works (a `train_test_split` with `stratify` refuses fewer
images than classes on either side), and seed i picks the same images for every arm of an
ablation, as `split_indices` does for the split itself. Like the split, the chosen positions are
cached on disk per node (service.training.cache), so a trial's new process does not import
scikit-learn. The normalisation statistics and the lighting basis stay those of the whole
training split: two arms that differ in train_subset differ only in the images they train on.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from service.config.data import DataError
from service.training.cache import cached_arrays, key, sklearn_version

if TYPE_CHECKING:
    from service.training.data import Datasets


def subset_positions(labels: Any, n: int, seed: int, what: str = "the training split"
                     ) -> np.ndarray:
    """Sorted positions of `n` of `labels`, stratified by label and fixed by `seed`; DataError
    (naming `what`) when there are fewer than `n`."""
    labels = np.asarray(labels)
    if n > len(labels):
        raise DataError(f"data.train_subset={n} is more than the {len(labels)} images of "
                        f"{what}: use at most {len(labels)}, or leave data.train_subset unset "
                        "to train on all of them")
    if n < 1:
        raise DataError(f"data.train_subset={n}: must be at least 1")

    def pick() -> dict[str, np.ndarray]:
        from sklearn.utils import resample  # lazily: ~80 MB with scipy

        chosen = resample(np.arange(len(labels)), replace=False, n_samples=n, stratify=labels,
                          random_state=seed)
        return {"positions": np.sort(chosen)}

    return cached_arrays(f"subset-{key(sklearn_version(), labels, n, seed)}", pick)["positions"]


def subset_train(ds: Datasets, n: int | None, seed: int, dataset: str) -> Datasets:
    """`ds` with its training set cut to `n` images (`subset_positions` of its labels); the
    same `ds` when `n` is None."""
    if n is None:
        return ds
    positions = subset_positions(ds.train.targets, n, seed, f"the training split of {dataset}")
    train = copy.copy(ds.train)  # shares the images; only the indices differ
    train.indices = (train.indices[torch.from_numpy(positions)]
                     if isinstance(train.indices, torch.Tensor) else train.indices[positions])
    return dataclasses.replace(ds, train=train)

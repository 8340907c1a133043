"""Datasets and batching, as `torch.utils.data`: `Dataset`, `TensorDataset`, `DataLoader`.

Example:
    >>> import modelkit.authoring as mk
    >>> ds = TensorDataset(mk.arange(10).reshape(5, 2), mk.arange(5))
    >>> [y.tolist() for _, y in DataLoader(ds, batch_size=2)]
    [[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import numpy as np

from modelkit.authoring.device import array_module
from modelkit.authoring.nn.parameter import Tensor, tensor_from_array

__all__ = ["Dataset", "TensorDataset", "Subset", "DataLoader", "default_collate"]


class Dataset:
    """A map-style dataset: subclasses define `__getitem__(index)` and `__len__`."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} does not define __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} does not define __len__")


class TensorDataset(Dataset):
    """Samples are rows of tensors that share their first dimension: item i is
    `tuple(t[i] for t in tensors)`.

    Example:
        >>> import modelkit.authoring as mk
        >>> len(TensorDataset(mk.zeros(4, 3), mk.zeros(4)))
        4
    """

    def __init__(self, *tensors: Tensor):
        sizes = [t.shape[0] for t in tensors]
        if len(set(sizes)) > 1:
            raise ValueError(f"TensorDataset: size mismatch between tensors, first dims {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The items of `dataset` at `indices`, in that order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


def default_collate(batch: list):
    """Stack a list of samples into a batch, keeping the samples' structure: tensors and
    arrays are stacked on a new first dim, numbers become a 1-d tensor, tuples and dicts are
    collated field by field.

    Example:
        >>> import modelkit.authoring as mk
        >>> default_collate([(mk.zeros(2), 1), (mk.ones(2), 0)])
        [tensor([[0., 0.],
                [1., 1.]]), tensor([1, 0])]
    """
    first = batch[0]
    if isinstance(first, Tensor):
        return tensor_from_array(array_module(first.array).stack([b.array for b in batch]))
    if isinstance(first, np.ndarray):
        return tensor_from_array(np.stack(batch))
    if isinstance(first, (bool, int, float, np.number)):
        # As PyTorch: Python floats give float64, ints int64.
        return tensor_from_array(np.asarray(batch))
    if isinstance(first, str):
        return list(batch)
    if isinstance(first, dict):
        return {key: default_collate([b[key] for b in batch]) for key in first}
    if isinstance(first, (tuple, list)):
        if any(len(b) != len(first) for b in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(list(field)) for field in zip(*batch)]
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, "
                    f"dicts or lists; found {type(first).__name__}")


def _permutation(n: int, generator) -> np.ndarray:
    """A random order of range(n) drawn from `generator`, or from the global generator (so that
    `mk.manual_seed` makes shuffling repeatable)."""
    from modelkit.authoring.creation import randperm
    return randperm(n, generator=generator).numpy()


class DataLoader:
    """Iterate over `dataset` in batches.

    `shuffle` draws a new order each epoch from `generator` (an `mk.Generator`, e.g.
    `mk.Generator().manual_seed(0)`), else from the global generator seeded by
    `mk.manual_seed`. `drop_last` drops a final incomplete batch. `collate_fn` turns a list of
    samples into a batch (default: `default_collate`).
    """

    def __init__(self, dataset: Dataset, batch_size: int | None = 1, shuffle: bool = False,
                 drop_last: bool = False, collate_fn: Callable | None = None,
                 generator=None):
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.collate_fn = collate_fn
        self.generator = generator

    def __len__(self) -> int:
        if self.batch_size is None:
            return len(self.dataset)
        if self.drop_last:
            return len(self.dataset) // self.batch_size
        return math.ceil(len(self.dataset) / self.batch_size)

    def _batches(self) -> Iterator[np.ndarray]:
        n = len(self.dataset)
        order = _permutation(n, self.generator) if self.shuffle else np.arange(n)
        size = self.batch_size or 1
        for start in range(0, len(self) * size, size):
            yield order[start:start + size]

    def __iter__(self):
        for indices in self._batches():
            if self.batch_size is None:
                yield self.dataset[int(indices[0])]
            elif self.collate_fn is None and type(self.dataset) is TensorDataset:
                # Same result as collating each row, one array index instead of batch_size.
                yield [tensor_from_array(t.array[indices]) for t in self.dataset.tensors]
            else:
                collate = self.collate_fn or default_collate
                yield collate([self.dataset[int(i)] for i in indices])

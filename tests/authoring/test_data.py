"""Dataset, TensorDataset and DataLoader."""

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring.random import Generator
from modelkit.authoring.utils.data import DataLoader, Dataset, TensorDataset, default_collate


def _dataset(n=10):
    return TensorDataset(mk.arange(n * 2).reshape(n, 2), mk.arange(n))


def test_batches_in_order_with_a_short_last_batch():
    batches = list(DataLoader(_dataset(), batch_size=4))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][0].shape == (4, 2)
    assert len(DataLoader(_dataset(), batch_size=4)) == 3


def test_drop_last():
    loader = DataLoader(_dataset(), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [len(b[1]) for b in loader] == [4, 4]


def test_shuffle_is_a_permutation_and_repeatable_with_a_seed():
    def epochs(loader):
        return [np.concatenate([b[1].numpy() for b in loader]) for _ in range(2)]
    first = epochs(DataLoader(_dataset(), batch_size=3, shuffle=True,
                              generator=Generator().manual_seed(7)))
    again = epochs(DataLoader(_dataset(), batch_size=3, shuffle=True,
                              generator=Generator().manual_seed(7)))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
        assert sorted(a.tolist()) == list(range(10))
    assert not np.array_equal(first[0], first[1])   # a new order each epoch


def test_shuffle_follows_manual_seed_without_a_generator():
    mk.manual_seed(3)
    a = [b[1].tolist() for b in DataLoader(_dataset(), batch_size=5, shuffle=True)]
    mk.manual_seed(3)
    b = [b[1].tolist() for b in DataLoader(_dataset(), batch_size=5, shuffle=True)]
    assert a == b


class Squares(Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"x": np.full(2, i, np.float32), "y": i * i}


def test_default_collate_keeps_structure_for_a_custom_dataset():
    batch = next(iter(DataLoader(Squares(), batch_size=3)))
    assert batch["x"].shape == (3, 2) and batch["x"].dtype == mk.float32
    assert batch["y"].tolist() == [0, 1, 4] and batch["y"].dtype == mk.int64


def test_custom_collate_fn_receives_the_list_of_samples():
    loader = DataLoader(Squares(), batch_size=2, collate_fn=lambda samples: len(samples))
    assert list(loader) == [2, 2, 1]


def test_tensor_dataset_fast_path_matches_default_collate():
    ds = _dataset()
    fast = next(iter(DataLoader(ds, batch_size=4)))
    slow = default_collate([ds[i] for i in range(4)])
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_errors():
    with pytest.raises(ValueError, match="size mismatch"):
        TensorDataset(mk.zeros(3, 2), mk.zeros(4))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(_dataset(), batch_size=0)

"""Tensor basics: creation, dtypes, devices, conversions, repr, in-place semantics."""

import numpy as np
import pytest

import modelkit.authoring as mk


def test_default_dtypes_follow_pytorch():
    assert mk.tensor([1.0, 2.0]).dtype == mk.float32
    assert mk.tensor([1, 2]).dtype == mk.int64
    assert mk.tensor([True]).dtype == mk.bool
    assert mk.tensor(np.zeros(2)).dtype == mk.float64  # numpy arrays keep their dtype
    assert mk.zeros(2).dtype == mk.float32
    assert mk.arange(3).dtype == mk.int64 and mk.arange(0, 1, 0.25).dtype == mk.float32
    assert mk.full((2,), 7).dtype == mk.int64 and mk.full((2,), 0.5).dtype == mk.float32
    assert mk.full((1,), True).dtype == mk.bool
    assert repr(mk.float32) == "modelkit.float32" and mk.float64.is_floating_point


@pytest.mark.parametrize("dtype", [mk.float16, mk.float32, mk.float64, mk.int32, mk.int64,
                                   mk.bool])
def test_every_dtype_round_trips(dtype):
    t = mk.ones(2, 3, dtype=dtype)
    assert t.dtype == dtype and t.numpy().dtype == dtype.numpy
    assert t.to(mk.float32).dtype == mk.float32


def test_metadata_and_conversions():
    t = mk.arange(6.0).reshape(2, 3)
    assert t.shape == (2, 3) and isinstance(t.shape, mk.Size) and t.ndim == 2
    assert t.size() == (2, 3) and t.size(-1) == 3 and t.numel() == 6
    assert t.device == "cpu" and str(t.device) == "cpu"
    assert t[1, 2].item() == 5.0 and t.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert np.asarray(t).shape == (2, 3) and float(t[0, 1]) == 1.0 and len(t) == 2
    with pytest.raises(IndexError, match=r"range of \[-2, 1\], but got 2"):
        t.size(2)
    with pytest.raises(RuntimeError, match="cannot be converted to Scalar"):
        t.item()


@pytest.mark.skipif(mk.cuda.is_available(), reason="needs a machine without cupy or a GPU")
def test_cuda_without_cupy_or_gpu_is_refused_with_a_clear_message():
    with pytest.raises(mk.cuda.CudaUnavailableError, match="device 'cuda'"):
        mk.zeros(2, device="cuda")
    with pytest.raises(mk.cuda.CudaUnavailableError, match="device 'cuda:0'"):
        mk.ones(1).to("cuda:0")
    assert mk.ones(1).to("cpu").device == mk.device("cpu")


def test_repr_matches_pytorch_style():
    assert repr(mk.tensor([[1.0, 2.0]], requires_grad=True)) == \
        "tensor([[1., 2.]], requires_grad=True)"
    assert repr(mk.tensor([0.5, 1.25])) == "tensor([0.5000, 1.2500])"
    assert repr(mk.tensor([1, 2], dtype=mk.int32)) == "tensor([1, 2], dtype=modelkit.int32)"
    assert repr(mk.tensor(3.0)) == "tensor(3.)"
    x = mk.ones(2, requires_grad=True)
    assert repr(x * 2) == "tensor([2., 2.], grad_fn=<MulBackward0>)"
    assert repr(mk.tensor([1e-6, 1.0])) == "tensor([1.0000e-06, 1.0000e+00])"


def test_detach_numpy_and_requires_grad_rules():
    x = mk.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    d = x.detach()
    assert not d.requires_grad and d.numpy() is x.array
    with pytest.raises(RuntimeError, match="floating point"):
        mk.tensor([1, 2]).requires_grad_()
    y = x * 2
    assert not y.is_leaf and x.is_leaf and y.grad_fn.name() == "MulBackward0"


def test_manual_seed_repeats_the_numbers():
    mk.manual_seed(123)
    a = (mk.rand(3), mk.randn(2, 2), mk.randint(0, 10, (4,)), mk.randperm(5))
    mk.manual_seed(123)
    b = (mk.rand(3), mk.randn(2, 2), mk.randint(0, 10, (4,)), mk.randperm(5))
    for u, v in zip(a, b):
        assert np.array_equal(u.numpy(), v.numpy())
    assert mk.rand(1000).numpy().min() >= 0 and mk.rand(1000).numpy().max() < 1
    assert mk.randn(2, dtype=mk.float64).dtype == mk.float64


def test_creation_functions():
    np.testing.assert_array_equal(mk.eye(2, 3).numpy(), np.eye(2, 3, dtype=np.float32))
    np.testing.assert_allclose(mk.linspace(0, 1, 5).numpy(), np.linspace(0, 1, 5), rtol=1e-6)
    assert mk.zeros_like(mk.ones(2, dtype=mk.int32)).dtype == mk.int32
    assert mk.full_like(mk.zeros(2), 3).tolist() == [3.0, 3.0]
    assert mk.ones(2, 3).new_zeros(4).dtype == mk.float32
    assert mk.empty(2, 2).shape == (2, 2) and mk.rand_like(mk.zeros(3)).shape == (3,)
    a = np.arange(3.0)
    shared = mk.from_numpy(a)
    a[0] = 7
    assert shared[0].item() == 7.0


def test_in_place_on_leaf_requiring_grad_is_refused():
    w = mk.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used "
                                           "in an in-place operation"):
        w.add_(1)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w += 1
    with mk.no_grad():
        w.mul_(3).sub_(1)
    assert w.tolist() == [2.0, 2.0]


def test_in_place_ops_write_through_views_without_grad():
    x = mk.zeros(2, 3)
    row = x[0]
    row.fill_(5)
    x[1, :2] = mk.tensor([1.0, 2.0])
    x[1, 2] = 9
    assert x.tolist() == [[5.0, 5.0, 5.0], [1.0, 2.0, 9.0]]
    x.zero_()
    assert x.sum().item() == 0
    x.copy_(mk.tensor([1, 2, 3]))
    assert x.tolist() == [[1.0, 2.0, 3.0]] * 2
    i = mk.tensor([1, 2])
    with pytest.raises(RuntimeError, match="can't be cast"):
        i.mul_(0.5)


def test_in_place_on_non_leaf_is_differentiated():
    w = mk.tensor([1.0, 2.0], requires_grad=True)
    y = w * 3
    y.mul_(y)          # y = (3w)^2
    y[0] = y[0] * 2    # first element doubled again
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [36.0, 36.0])


def test_modifying_a_saved_tensor_in_place_breaks_backward():
    w = mk.ones(2, requires_grad=True)
    y = w * 2
    z = y * y
    with mk.no_grad():
        y.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_modifying_a_saved_output_in_place_breaks_backward_but_unsaved_is_fine():
    w = mk.ones(2, requires_grad=True)
    y = w.exp()
    with mk.no_grad():
        y.mul_(2)
    with pytest.raises(RuntimeError, match="output 0 of 'exp'"):
        y.sum().backward()
    z = w + 1
    with mk.no_grad():
        z.mul_(2)
    z.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0]


def test_numpy_operands_and_reflected_operators():
    x = mk.tensor([1.0, 2.0])
    assert (np.float32(2) * x).tolist() == [2.0, 4.0]
    assert (np.ones(2, np.float32) + x).tolist() == [2.0, 3.0]
    assert (2 ** x).tolist() == [2.0, 4.0] and (1 - x).tolist() == [0.0, -1.0]
    assert (mk.tensor([1, 2]) / 2).dtype == mk.float32
    assert (mk.tensor([1, 2]) * 1.5).dtype == mk.float32
    assert (mk.tensor([1, 2]) + mk.tensor([0.5], dtype=mk.float64)).dtype == mk.float64
    assert (x > 1).dtype == mk.bool and (x == x).all().item()

"""Devices without a GPU: parsing, the one error for a missing cupy or GPU (with a simulated
cupy), the device-mismatch check of the op dispatch, and host-only conversions."""

from __future__ import annotations

import types

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring.device import dispatch, op_module
from modelkit.authoring.tensor import Tensor
from modelkit import edge_runtime
from modelkit.edge_runtime import cuda
from modelkit.edge_runtime.format.model import Model, Node, ValueInfo


def _relu_model() -> Model:
    return Model(inputs=[ValueInfo("x", "float32", ("n", 2))],
                 outputs=[ValueInfo("y", "float32", ("n", 2))], nodes=[Node("Relu", ["x"], ["y"])])


def _fake_cupy(count=0, error=None):
    def get_device_count():
        if error is not None:
            raise error
        return count
    runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


@pytest.fixture
def simulate(monkeypatch):
    """simulate(module_or_error): what `import cupy` gives from now on in this test."""
    def install(outcome):
        def import_cupy():
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        monkeypatch.setattr(cuda, "import_cupy", import_cupy)
        monkeypatch.setattr(cuda, "_cupy", None)
    return install


class FakeGpuArray:
    """Just enough of a cupy array for the device bookkeeping: dtype, shape, device.id."""

    def __init__(self, shape, device_id=0, dtype=np.float32):
        self.shape, self.ndim, self.dtype = tuple(shape), len(shape), np.dtype(dtype)
        self.device = types.SimpleNamespace(id=device_id)


# --- parsing -------------------------------------------------------------------------------

def test_device_parses_like_torch_device_and_never_imports_cupy(simulate):
    simulate(ImportError("No module named 'cupy'"))
    assert (mk.device("cuda:1").type, mk.device("cuda:1").index) == ("cuda", 1)
    assert mk.device("cuda", 2) == "cuda:2" and str(mk.device(0)) == "cuda:0"
    assert repr(mk.device("cuda")) == "device(type='cuda')"
    assert mk.device("cuda") == mk.device("cuda:0") and mk.device("cuda:0") != "cuda:1"
    assert mk.device("cpu") != "cuda" and mk.device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="unknown device 'tpu'; expected 'cpu', 'cuda' or 'cuda:N'"):
        mk.device("tpu")
    with pytest.raises(RuntimeError, match="unknown device 'cuda:x'"):
        mk.device("cuda:x")


# --- cupy missing, no GPU: one clear error ------------------------------------------------

def test_without_cupy_every_cuda_request_says_cupy_is_missing_and_how_to_install(simulate):
    simulate(ImportError("No module named 'cupy'"))
    assert not mk.cuda.is_available() and mk.cuda.device_count() == 0
    requests = [lambda: mk.zeros(2, device="cuda"), lambda: mk.tensor([1.0], device="cuda:0"),
                lambda: mk.ones(2).cuda(), lambda: mk.ones(2).to("cuda"),
                lambda: mk.nn.Linear(2, 2).to("cuda"), lambda: mk.randn(3, device="cuda"),
                lambda: edge_runtime.Session(_relu_model(), device="cuda")]
    for request in requests:
        with pytest.raises(mk.cuda.CudaUnavailableError) as raised:
            request()
        message = str(raised.value)
        assert "cupy is not installed" in message and "pip install 'modelkit[gpu]'" in message
        assert "cupy-cuda13x" in message


def test_cupy_without_a_gpu_says_no_device_was_found(simulate):
    simulate(_fake_cupy(count=0))
    assert not mk.cuda.is_available()
    with pytest.raises(mk.cuda.CudaUnavailableError,
                       match=r"device 'cuda': cupy is installed but found no CUDA device "
                             r"\(getDeviceCount\(\) returned 0\)"):
        mk.zeros(1, device="cuda")
    with pytest.raises(edge_runtime.EdgeRuntimeError, match="found no CUDA device"):
        edge_runtime.Session(_relu_model(), device="cuda")


def test_a_driver_error_is_reported_as_no_device_with_its_text(simulate):
    simulate(_fake_cupy(error=RuntimeError("cudaErrorInsufficientDriver")))
    assert mk.cuda.device_count() == 0
    with pytest.raises(mk.cuda.CudaUnavailableError, match="cudaErrorInsufficientDriver"):
        mk.ones(1).to("cuda")


def test_a_device_index_beyond_the_gpus_names_the_range(simulate):
    simulate(_fake_cupy(count=2))
    with pytest.raises(mk.cuda.CudaUnavailableError,
                       match=r"'cuda:3': CUDA device index 3 is out of range; this machine has 2 "
                             r"CUDA device\(s\) \(cuda:0..cuda:1\)"):
        mk.zeros(1, device="cuda:3")


def test_unknown_runtime_devices_and_cuda_graph_on_cpu_are_refused():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        edge_runtime.Session(_relu_model(), device="tpu")
    with pytest.raises(ValueError, match="cuda_graph=True needs device='cuda'"):
        edge_runtime.Session(_relu_model(), cuda_graph=True)


# --- the device check in the op dispatch --------------------------------------------------

def test_op_dispatch_names_both_devices_when_operands_differ(monkeypatch):
    monkeypatch.setattr(dispatch, "cuda_in_use", True)
    on_gpu = Tensor._wrap(FakeGpuArray((2,)))
    with pytest.raises(RuntimeError, match=r"Expected all tensors to be on the same device, but "
                                           r"found at least two devices, cuda:0 and cpu! "
                                           r"\(in op 'add'\)"):
        on_gpu + mk.ones(2)
    with pytest.raises(RuntimeError, match="two devices, cpu and cuda:0!"):
        mk.ones(2) * on_gpu
    with pytest.raises(RuntimeError, match="two devices, cuda:0 and cuda:1!"):
        mk.matmul(on_gpu, Tensor._wrap(FakeGpuArray((2,), device_id=1)))


def test_cpu_operands_never_reach_the_device_check_path():
    assert op_module("add", (np.ones(2), None, np.float32(1)))[0] is np


def test_cuda_tensors_refuse_host_conversions_like_pytorch():
    t = Tensor._wrap(FakeGpuArray((2,), device_id=1))
    assert t.device == mk.device("cuda:1") and t.is_cuda
    with pytest.raises(TypeError, match=r"can't convert cuda:1 device type tensor to numpy\. Use "
                                        r"Tensor\.cpu\(\) to copy the tensor to host memory first"):
        t.numpy()
    with pytest.raises(TypeError, match="can't convert cuda:1 device type tensor to numpy"):
        np.asarray(t)


# --- behaviour shared by both devices, checked on the cpu ---------------------------------

def test_module_to_keeps_parameter_objects_so_existing_optimizers_follow():
    model = mk.nn.Linear(3, 2)
    weight = model.weight
    optimizer = mk.optim.SGD(model.parameters(), lr=0.1)
    model.to(mk.float64)
    assert model.weight is weight and weight.dtype == mk.float64
    model(mk.ones(1, 3, dtype=mk.float64)).sum().backward()
    before = weight.detach().clone()
    optimizer.step()
    assert not bool((weight.detach() == before).all())


def test_manual_seed_reseeds_the_cuda_generators_without_importing_cupy(simulate):
    simulate(ImportError("No module named 'cupy'"))
    mk.cuda._states[0] = "a generator from an earlier seed"
    mk.manual_seed(123)
    assert mk.cuda._seed == 123 and mk.cuda._states == {}


def test_cupy_feeds_are_checked_through_a_zero_copy_stand_in():
    from modelkit.edge_runtime.gpu_run import _stand_in
    from modelkit.edge_runtime.input_check import InputCheck, check_feeds
    stand_in = _stand_in(FakeGpuArray((3, 5)))
    assert stand_in.shape == (3, 5) and stand_in.dtype == np.float32 and stand_in.strides == (0, 0)
    checks = [InputCheck.of(ValueInfo("x", "float32", ("n", 4)), slot=2)]
    with pytest.raises(edge_runtime.InvalidInputError, match="dim 1 must be 4"):
        check_feeds(checks, {"x": stand_in})


def test_device_outputs_on_a_cpu_session_returns_the_same_numpy_outputs():
    session = edge_runtime.Session(_relu_model())
    x = np.array([[-1.0, 2.0]], np.float32)
    out = session.run({"x": x}, device_outputs=True)["y"]
    assert isinstance(out, np.ndarray) and out.tolist() == [[0.0, 2.0]]

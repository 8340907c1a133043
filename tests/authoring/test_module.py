"""Module behaviour: registration, traversal, state dicts, strict loading, hooks, modes, repr."""

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.scale = nn.Parameter(mk.ones(4))
        self.register_buffer("cache", mk.zeros(2), persistent=False)

    def forward(self, x):
        return self.bn(self.fc(x)) * self.scale


def test_attribute_assignment_registers_parameters_buffers_and_children():
    block = Block()
    assert [n for n, _ in block.named_parameters()] == [
        "scale", "fc.weight", "fc.bias", "bn.weight", "bn.bias"]
    assert [n for n, _ in block.named_buffers()] == [
        "cache", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert [n for n, _ in block.named_children()] == ["fc", "bn"]
    assert [n for n, _ in block.named_modules()] == ["", "fc", "bn"]
    assert block.bn.num_batches_tracked.dtype == mk.int64


def test_state_dict_has_pytorch_names_and_skips_non_persistent_buffers():
    keys = list(Block().state_dict())
    assert keys == ["scale", "fc.weight", "fc.bias", "bn.weight", "bn.bias", "bn.running_mean",
                    "bn.running_var", "bn.num_batches_tracked"]


def test_state_dict_round_trip_gives_identical_outputs():
    source, target = Block().eval(), Block().eval()
    x = mk.randn(5, 3)
    target.load_state_dict(source.state_dict())
    with mk.no_grad():
        np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())


def test_state_dict_values_are_detached_copies_of_the_same_data():
    block = Block()
    state = block.state_dict()
    assert not state["fc.weight"].requires_grad
    keep = block.state_dict(keep_vars=True)
    assert keep["fc.weight"] is block.fc.weight


def test_load_state_dict_copies_in_place():
    block = Block()
    weight = block.fc.weight
    block.load_state_dict({k: np.zeros(v.shape, v.numpy().dtype)
                           for k, v in block.state_dict().items()})
    assert block.fc.weight is weight
    assert float(weight.abs().sum().item()) == 0.0


def test_strict_loading_lists_every_problem_at_once():
    block = Block()
    state = dict(block.state_dict())
    del state["fc.bias"], state["bn.running_var"]
    state["extra.weight"] = mk.zeros(1)
    state["fc.weight"] = mk.zeros(7, 3)
    with pytest.raises(RuntimeError) as info:
        block.load_state_dict(state)
    message = str(info.value)
    for text in ('Missing key(s) in state_dict: "fc.bias", "bn.running_var"',
                 'Unexpected key(s) in state_dict: "extra.weight"',
                 "size mismatch for fc.weight: copying a param with shape "
                 "modelkit.Size([7, 3]) from checkpoint, the shape in current model is "
                 "modelkit.Size([4, 3])"):
        assert text in message


def test_non_strict_loading_reports_keys_but_still_refuses_shape_mismatch():
    block = Block()
    result = block.load_state_dict({"fc.weight": mk.zeros(4, 3), "other": mk.zeros(1)},
                                   strict=False)
    assert "fc.bias" in result.missing_keys and result.unexpected_keys == ["other"]
    with pytest.raises(RuntimeError, match="size mismatch for fc.weight"):
        block.load_state_dict({"fc.weight": mk.zeros(2, 3)}, strict=False)


def test_assigning_a_plain_tensor_to_a_parameter_slot_is_refused():
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'weight'"):
        layer.weight = mk.zeros(2, 2)
    layer.bias = None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]


def test_shared_parameters_are_listed_once():
    layer = nn.Linear(2, 2)
    model = nn.Sequential(layer, nn.ReLU(), layer)
    assert len(list(model.parameters())) == 2
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_train_and_eval_switch_dropout_and_batchnorm():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    x = mk.randn(64, 4)
    model.train()
    assert all(m.training for m in model.modules())
    a, b = model(x).detach().numpy(), model(x).detach().numpy()
    assert not np.array_equal(a, b)                      # dropout draws new masks
    assert model[1].num_batches_tracked.item() == 2
    model.eval()
    assert not any(m.training for m in model.modules())
    running_mean = model[1].running_mean.numpy().copy()
    a, b = model(x).detach().numpy(), model(x).detach().numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model[1].running_mean.numpy(), running_mean)
    assert model[1].num_batches_tracked.item() == 2


def test_forward_hooks_and_pre_hooks_can_replace_values_and_be_removed():
    layer = nn.Identity()
    seen = []
    pre = layer.register_forward_pre_hook(lambda module, args: (args[0] * 2,))
    post = layer.register_forward_hook(lambda module, args, out: seen.append(out.item()) or out + 1)
    assert layer(mk.tensor(1.0)).item() == 3.0
    assert seen == [2.0]
    pre.remove()
    post.remove()
    assert layer(mk.tensor(1.0)).item() == 1.0
    assert seen == [2.0]


def test_global_module_hooks_see_every_submodule():
    names = []
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    paths = {id(m): n for n, m in model.named_modules()}
    with nn.register_module_forward_pre_hook(lambda m, args: names.append(paths[id(m)])):
        model(mk.zeros(1, 2))
    model(mk.zeros(1, 2))
    assert names == ["", "0", "1"]


def test_zero_grad_apply_and_requires_grad():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    model(mk.randn(4, 2)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    visited = []
    model.apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["Linear", "Linear", "Sequential"]
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())


def test_to_dtype_converts_floating_tensors_and_keeps_parameters():
    model = Block().to(mk.float64)
    assert model.fc.weight.dtype == mk.float64 and isinstance(model.fc.weight, nn.Parameter)
    assert model.bn.num_batches_tracked.dtype == mk.int64
    assert model(mk.randn(3, 3, dtype=mk.float64)).dtype == mk.float64


def test_containers():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and len(list(layers.parameters())) == 6
    layers.append(nn.ReLU())
    assert isinstance(layers[-1], nn.ReLU)
    heads = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 3)})
    assert list(heads.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq[:2]) == 2 and isinstance(seq[-1], nn.Linear)
    with pytest.raises(IndexError):
        seq[3]


def test_repr_looks_like_pytorch():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert repr(model) == ("Sequential(\n"
                           "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                           "  (1): ReLU()\n"
                           ")")


def test_missing_forward_is_a_clear_error():
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(1)


def test_repr_matches_pytorch_for_a_cnn():
    torch = pytest.importorskip("torch")

    def build(lib):
        return lib.nn.Sequential(
            lib.nn.Conv2d(1, 8, 3, padding=1), lib.nn.BatchNorm2d(8), lib.nn.ReLU(),
            lib.nn.MaxPool2d(2), lib.nn.Flatten(), lib.nn.Dropout(0.2),
            lib.nn.Linear(8 * 4 * 4, 10), lib.nn.LayerNorm(10), lib.nn.GRU(3, 4, batch_first=True))
    assert repr(build(mk)) == repr(build(torch))


def test_load_state_dict_assign_replaces_tensors():
    layer = nn.Linear(2, 2)
    old = layer.weight
    layer.load_state_dict({"weight": np.ones((2, 2), np.float32),
                           "bias": np.zeros(2, np.float32)}, assign=True)
    assert layer.weight is not old and isinstance(layer.weight, nn.Parameter)
    assert layer.weight.requires_grad and layer.weight.tolist() == [[1.0, 1.0], [1.0, 1.0]]

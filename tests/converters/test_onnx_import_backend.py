"""ONNX -> IR -> ONNX and ONNX -> IR -> .mkb -> IR -> ONNX over every ONNX backend node model
that imports: the written models say exactly what the originals say and pass full_check."""

import warnings

import onnx
import pytest
from onnx import helper, numpy_helper

from modelkit.converters import mkb_import, onnx_import
from modelkit.converters.errors import ConversionError
from modelkit.exporter import mkb_writer, onnx_writer

pytestmark = pytest.mark.slow


def _node_meaning(node):
    attrs = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, onnx.TensorProto):  # raw_data and typed fields mean the same
            array = numpy_helper.to_array(value)
            value = (str(array.dtype), array.shape, array.tobytes())
        attrs[a.name] = (a.type, value)
    return node.op_type, node.domain, node.name, list(node.input), list(node.output), attrs


def _dims(value_info):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
            for d in value_info.type.tensor_type.shape.dim]


def _same_value_info(written, original):
    """Equal, except that an unknown dim of the original comes back as a generated unk__ name."""
    if (written.name, written.type.tensor_type.elem_type) != (original.name, original.type.tensor_type.elem_type):
        return False
    a, b = _dims(written), _dims(original)
    return len(a) == len(b) and all(x == y or (y is None and str(x).startswith("unk__")) for x, y in zip(a, b))


def _check_same_model(written, original, case):
    assert [_node_meaning(n) for n in written.graph.node] == \
        [_node_meaning(n) for n in original.graph.node], case
    weights = {t.name for t in original.graph.initializer}
    original_inputs = [v for v in original.graph.input if v.name not in weights]
    for ours, theirs in ((written.graph.input, original_inputs), (written.graph.output, original.graph.output)):
        assert len(ours) == len(theirs) and all(map(_same_value_info, ours, theirs)), case
    assert {t.name: (t.data_type, numpy_helper.to_array(t).tobytes()) for t in written.graph.initializer} == \
        {t.name: (t.data_type, numpy_helper.to_array(t).tobytes()) for t in original.graph.initializer}, case


def _passes_full_check(model) -> bool:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return False
    return True


def test_backend_node_models_survive_both_round_trips(tmp_path):
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        cases = load_model_tests(kind="node")
    imported = 0
    for case in cases:
        try:
            graph = onnx_import.load(case.model)
        except ConversionError:
            continue
        imported += 1
        written = onnx_writer.to_proto(graph)
        # test_mvn fails full_check itself (shape inference of the opset-13 function body)
        onnx.checker.check_model(written, full_check=_passes_full_check(case.model))
        _check_same_model(written, case.model, case.name)
        mkb_writer.save(graph, tmp_path / "case.mkb")
        _check_same_model(onnx_writer.to_proto(mkb_import.load(tmp_path / "case.mkb")), case.model, case.name)
    assert imported > 1000, f"only {imported} of {len(cases)} backend node models imported"

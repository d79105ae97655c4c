"""External-data vetting: the hard-link hole ONNX Runtime leaves open is closed before loading."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vcl_infer.encode import _onnx_external as ext
from vcl_infer.encode._onnx_external import UnsafeModel, check_external_data, external_data_locations


def test_field_numbers_match_the_onnx_schema():
    number = lambda msg, name: msg.DESCRIPTOR.fields_by_name[name].number  # noqa: E731
    assert number(onnx.ModelProto, "graph") == ext._MODEL_GRAPH
    assert number(onnx.ModelProto, "functions") == ext._MODEL_FUNCTIONS
    assert number(onnx.FunctionProto, "node") == ext._FUNCTION_NODE
    assert number(onnx.GraphProto, "node") == ext._GRAPH_NODE
    assert number(onnx.GraphProto, "initializer") == ext._GRAPH_INITIALIZER
    assert number(onnx.GraphProto, "sparse_initializer") == ext._GRAPH_SPARSE_INITIALIZER
    assert number(onnx.NodeProto, "attribute") == ext._NODE_ATTRIBUTE
    for name, value in [("t", ext._ATTR_TENSOR), ("g", ext._ATTR_GRAPH), ("tensors", ext._ATTR_TENSORS),
                        ("graphs", ext._ATTR_GRAPHS), ("sparse_tensor", ext._ATTR_SPARSE),
                        ("sparse_tensors", ext._ATTR_SPARSES)]:
        assert number(onnx.AttributeProto, name) == value
    assert number(onnx.TensorProto, "external_data") == ext._TENSOR_EXTERNAL_DATA
    assert number(onnx.SparseTensorProto, "values") == ext._SPARSE_VALUES
    assert number(onnx.StringStringEntryProto, "key") == ext._ENTRY_KEY


def tiny_model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "W")
    const = helper.make_node("Constant", [], ["B"], value=numpy_helper.from_array(np.ones(8, np.float32), "b"))
    matmul = helper.make_node("MatMul", ["x", "W"], ["xw"])
    add = helper.make_node("Add", ["xw", "B"], ["y"])
    graph = helper.make_graph(
        [const, matmul, add], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save_external(model, path, location="weights.bin"):
    onnx.save_model(model, str(path), save_as_external_data=True, location=location, size_threshold=0,
                    all_tensors_to_one_file=True, convert_attribute=True)


def set_location(path, location):
    model = onnx.load(str(path), load_external_data=False)
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))


def test_self_contained_model_has_no_external_data(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(tiny_model(), str(path))
    assert external_data_locations(path.read_bytes()) == []
    assert check_external_data(path) == []


def test_external_data_in_the_folder_is_found_in_initializers_and_node_attributes(tmp_path):
    path = tmp_path / "m.onnx"
    save_external(tiny_model(), path)
    assert sorted(external_data_locations(path.read_bytes())) == ["weights.bin", "weights.bin"]
    assert check_external_data(path) == [tmp_path / "weights.bin"]


def test_hard_link_to_a_file_outside_is_refused(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = model_dir / "m.onnx"
    save_external(tiny_model(), path)
    secret = tmp_path / "secret.bin"
    os.replace(model_dir / "weights.bin", secret)
    os.link(secret, model_dir / "weights.bin")
    with pytest.raises(UnsafeModel, match="hard links"):
        check_external_data(path)


def test_symlink_is_refused(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = model_dir / "m.onnx"
    save_external(tiny_model(), path)
    os.replace(model_dir / "weights.bin", tmp_path / "elsewhere.bin")
    os.symlink(tmp_path / "elsewhere.bin", model_dir / "weights.bin")
    with pytest.raises(UnsafeModel, match="not a regular file"):
        check_external_data(path)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_locations_outside_the_folder_are_refused(tmp_path, location):
    path = tmp_path / "m.onnx"
    save_external(tiny_model(), path)
    set_location(path, location)
    with pytest.raises(UnsafeModel, match="outside"):
        check_external_data(path)


def test_truncated_model_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "m.onnx"
    save_external(tiny_model(), path)
    data = path.read_bytes()
    with pytest.raises(UnsafeModel):
        external_data_locations(data[: len(data) - 7])


def test_bundle_loading_vets_external_data_before_onnxruntime_sees_it(tmp_path):
    from vcl_infer.clips.spec import EncoderSpec
    from vcl_infer.encode.bundle import load_bundle_spec

    model = tiny_model()
    model.metadata_props.add(key="vcl.spec", value=EncoderSpec(arch="tiny", embed_dim=8).to_json())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = model_dir / "m.onnx"
    save_external(model, path)
    assert load_bundle_spec(path).arch == "tiny"
    secret = tmp_path / "secret.bin"
    os.replace(model_dir / "weights.bin", secret)
    os.link(secret, model_dir / "weights.bin")
    with pytest.raises(UnsafeModel):
        load_bundle_spec(path)

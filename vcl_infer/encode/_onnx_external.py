"""Find the external-data files an ONNX model names, without the onnx package, and vet them.

ONNX Runtime 1.32 refuses ``..``, absolute paths and symlinks in external-data locations, but
follows a hard link to a file outside the model's folder (measured here: a secret file's bytes
came out in the model's output). Bundles may come from users, so before a session is created
every referenced file must be a regular, singly-linked file inside the model's folder.

The walk reads the protobuf wire format directly: only the few message fields that can hold
tensors are descended into; weight payloads are skipped by length, never copied.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vcl_infer.errors import VclError

# field numbers from onnx.proto (checked against the onnx package in tests)
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_FUNCTION_NODE = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


class UnsafeModel(VclError):
    """An ONNX model refers to data outside its folder, through a link, or is malformed."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise UnsafeModel("malformed ONNX file (bad varint)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """Yield ``(field_number, payload)`` for length-delimited fields; skip the others."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise UnsafeModel("malformed ONNX file (field runs past the end)")
            yield number, buf[pos : pos + length]
            pos += length
        else:
            raise UnsafeModel(f"malformed ONNX file (wire type {wire})")


def _tensor_locations(tensor: memoryview, found: list[str]) -> None:
    for number, payload in _fields(tensor):
        if number == _TENSOR_EXTERNAL_DATA:
            entry = dict(_fields(payload))
            if bytes(entry.get(_ENTRY_KEY, b"")) == b"location":
                found.append(bytes(entry.get(_ENTRY_VALUE, b"")).decode("utf-8", "replace"))


def _sparse_locations(sparse: memoryview, found: list[str]) -> None:
    for number, payload in _fields(sparse):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor_locations(payload, found)


def _node_locations(node: memoryview, found: list[str]) -> None:
    for number, attribute in _fields(node):
        if number != _NODE_ATTRIBUTE:
            continue
        for field, payload in _fields(attribute):
            if field in (_ATTR_TENSOR, _ATTR_TENSORS):
                _tensor_locations(payload, found)
            elif field in (_ATTR_GRAPH, _ATTR_GRAPHS):
                _graph_locations(payload, found)
            elif field in (_ATTR_SPARSE, _ATTR_SPARSES):
                _sparse_locations(payload, found)


def _graph_locations(graph: memoryview, found: list[str]) -> None:
    for number, payload in _fields(graph):
        if number == _GRAPH_INITIALIZER:
            _tensor_locations(payload, found)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _sparse_locations(payload, found)
        elif number == _GRAPH_NODE:
            _node_locations(payload, found)


def external_data_locations(model_bytes: bytes) -> list[str]:
    """Every external-data ``location`` named anywhere in a serialized ModelProto."""
    found: list[str] = []
    for number, payload in _fields(memoryview(model_bytes)):
        if number == _MODEL_GRAPH:
            _graph_locations(payload, found)
        elif number == _MODEL_FUNCTIONS:
            for field, node in _fields(payload):
                if field == _FUNCTION_NODE:
                    _node_locations(node, found)
    return found


def check_external_data(onnx_path: str | os.PathLike) -> list[Path]:
    """Refuse a model whose external data is not a regular, singly-linked file in its folder.

    Returns:
        The external-data files (empty for a self-contained model).

    Raises:
        UnsafeModel: naming the offending location and why.
    """
    onnx_path = Path(onnx_path)
    folder = onnx_path.parent.resolve()
    files = []
    for location in sorted(set(external_data_locations(onnx_path.read_bytes()))):
        target = folder / location
        problem = None
        if not location or os.path.isabs(location) or ".." in Path(location).parts:
            problem = "points outside the model's folder"
        else:
            try:
                info = os.lstat(target)
            except OSError:
                problem = "does not exist"
            else:
                if not stat.S_ISREG(info.st_mode):
                    problem = "is not a regular file (links are refused)"
                elif info.st_nlink != 1:
                    problem = "has several hard links (it could be a file from elsewhere)"
                elif folder not in target.resolve().parents:
                    problem = "resolves outside the model's folder"
        if problem:
            raise UnsafeModel(
                f"{onnx_path}: external data '{location}' {problem}; refusing to load it. "
                "Re-export the model, or copy its data file into the model's folder."
            )
        files.append(target)
    return files

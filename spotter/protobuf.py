"""The few protobuf operations the runtime needs on ONNX files, without the `onnx` package.

ONNX files are protobuf `ModelProto` messages. Reading openWakeWord's embedding_model.onnx weights and splicing
them into the exported keyword model need only the wire format: varints, length-delimited fields and the field
numbers of ModelProto (graph 7, metadata_props 14), GraphProto (node 1, initializer 5, input 11),
NodeProto (input 1, op_type 4), TensorProto (dims 1, data_type 2, float_data 4, name 8, raw_data 9) and
ValueInfoProto / StringStringEntryProto (name / key 1, value 2). Importing `onnx` costs ~0.5 s; this costs ms.
"""
from __future__ import annotations

import struct
from typing import Iterator

import numpy as np

WT_VARINT, WT_64, WT_LEN, WT_32 = 0, 1, 2, 5
FLOAT = 1                         # TensorProto.DataType.FLOAT

MODEL_GRAPH, MODEL_METADATA = 7, 14
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT = 1, 5, 11
NODE_INPUT, NODE_OP_TYPE = 1, 4
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_FLOAT_DATA, TENSOR_NAME, TENSOR_RAW_DATA = 1, 2, 4, 8, 9


class ProtobufError(ValueError):
    pass


def _varint(buf, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(buf) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of each field of a message: an int for varints and fixed-size fields,
    a memoryview for length-delimited ones."""
    buf = memoryview(buf)
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == WT_VARINT:
            value, i = _varint(buf, i)
        elif wt == WT_LEN:
            size, i = _varint(buf, i)
            if i + size > n:
                raise ProtobufError(f"field {field}: length {size} past the end of the message")
            value, i = buf[i:i + size], i + size
        elif wt == WT_64:
            value, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wt == WT_32:
            value, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ProtobufError(f"field {field}: unsupported wire type {wt}")
        if i > n:
            raise ProtobufError("truncated message")
        yield field, wt, value


def varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def len_field(field: int, payload: bytes) -> bytes:
    return varint_bytes(field << 3 | WT_LEN) + varint_bytes(len(payload)) + bytes(payload)


def _string(v) -> str:
    return bytes(v).decode("utf-8")


def graph_bytes(model: bytes):
    for f, wt, v in fields(model):
        if f == MODEL_GRAPH and wt == WT_LEN:
            return v
    raise ProtobufError("no graph in the model")


def parse_tensor(buf) -> tuple[str, np.ndarray]:
    """A float TensorProto -> (name, array)."""
    name, dims, dtype, raw, floats = "", [], FLOAT, None, []
    for f, wt, v in fields(buf):
        if f == TENSOR_DIMS:
            if wt == WT_LEN:                      # packed
                j = 0
                while j < len(v):
                    d, j = _varint(v, j)
                    dims.append(d)
            else:
                dims.append(v)
        elif f == TENSOR_DATA_TYPE:
            dtype = v
        elif f == TENSOR_NAME:
            name = _string(v)
        elif f == TENSOR_RAW_DATA:
            raw = bytes(v)
        elif f == TENSOR_FLOAT_DATA:
            if wt == WT_LEN:
                floats.extend(np.frombuffer(bytes(v), "<f4"))
            else:
                floats.append(struct.unpack("<f", v.to_bytes(4, "little"))[0])
    if dtype != FLOAT:
        raise ProtobufError(f"tensor {name!r}: data type {dtype}, only float is read")
    data = np.frombuffer(raw, "<f4") if raw is not None else np.asarray(floats, np.float32)
    count = int(np.prod(dims)) if dims else 1
    if data.size != count:
        raise ProtobufError(f"tensor {name!r}: {data.size} values for shape {tuple(dims)}")
    return name, data.astype(np.float32).reshape(dims)


def read_graph(model: bytes) -> tuple[list[tuple[str, list[str]]], dict[str, np.ndarray]]:
    """(nodes as (op_type, inputs) in graph order, float initializers by name)."""
    nodes, tensors = [], {}
    for f, wt, v in fields(graph_bytes(model)):
        if f == GRAPH_NODE:
            op, inputs = "", []
            for nf, _, nv in fields(v):
                if nf == NODE_INPUT:
                    inputs.append(_string(nv))
                elif nf == NODE_OP_TYPE:
                    op = _string(nv)
            nodes.append((op, inputs))
        elif f == GRAPH_INITIALIZER:
            try:
                name, arr = parse_tensor(v)
            except ProtobufError:
                continue                          # non-float constants (shapes...) are not needed here
            tensors[name] = arr
    return nodes, tensors


def tensor_bytes(name: str, arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype="<f4")
    out = b"".join(varint_bytes(TENSOR_DIMS << 3 | WT_VARINT) + varint_bytes(int(d)) for d in arr.shape)
    out += varint_bytes(TENSOR_DATA_TYPE << 3 | WT_VARINT) + varint_bytes(FLOAT)
    return out + len_field(TENSOR_NAME, name.encode()) + len_field(TENSOR_RAW_DATA, arr.tobytes())


def with_initializers(model: bytes, tensors: dict[str, np.ndarray]) -> bytes:
    """The model with `tensors` added as constant initializers; graph inputs of the same names are removed
    (so onnxruntime treats them as constants: folded and pre-packed)."""
    out = bytearray()
    for f, wt, v in fields(model):
        if f == MODEL_GRAPH and wt == WT_LEN:
            graph = bytearray()
            for gf, gwt, gv in fields(v):
                if gf == GRAPH_INPUT and _value_info_name(gv) in tensors:
                    continue
                graph += _raw_field(gf, gwt, gv)
            for name, arr in tensors.items():
                graph += len_field(GRAPH_INITIALIZER, tensor_bytes(name, arr))
            out += len_field(MODEL_GRAPH, bytes(graph))
        else:
            out += _raw_field(f, wt, v)
    return bytes(out)


def _value_info_name(buf) -> str:
    for f, _, v in fields(buf):
        if f == 1:
            return _string(v)
    return ""


def _raw_field(f: int, wt: int, v) -> bytes:
    key = varint_bytes(f << 3 | wt)
    if wt == WT_LEN:
        return key + varint_bytes(len(v)) + bytes(v)
    if wt == WT_VARINT:
        return key + varint_bytes(v)
    return key + v.to_bytes(8 if wt == WT_64 else 4, "little")


def read_metadata(model: bytes) -> dict[str, str]:
    out = {}
    for f, wt, v in fields(model):
        if f == MODEL_METADATA and wt == WT_LEN:
            kv = {kf: _string(kv_) for kf, _, kv_ in fields(v)}
            out[kv.get(1, "")] = kv.get(2, "")
    return out


def add_metadata(model: bytes, props: dict[str, str]) -> bytes:
    """Append metadata_props entries (a repeated field: appending is merging)."""
    extra = b"".join(len_field(MODEL_METADATA, len_field(1, k.encode()) + len_field(2, v.encode()))
                     for k, v in props.items())
    return bytes(model) + extra

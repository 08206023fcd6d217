"""Seeds fuzz/corpus/<target>/ from the repository's own files (golden models,
test_data_set tensors, rule files, device profiles) plus a few hand-made
hostile cases (escaping external-data locations, length fields claiming 100 GB).
Run from the repository root with the golden venv's Python:

    .venv/bin/python fuzz/seed_corpora.py [FOLDER]

(FOLDER defaults to fuzz/corpus), then let the fuzzers grow the corpora and
minimize them (fuzz/README.md).
Files are named by content hash, so running it twice adds nothing."""

import glob
import hashlib
import io
import os

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

SEPARATOR = b"--pare-fuzz-file--"  # pare::fuzz_targets::CHUNK_SEPARATOR
CORPUS = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus"


def add(target, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, hashlib.sha1(data).hexdigest()), "wb") as out:
        out.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def huge_float_tensor(name):
    """A tensor whose dims claim 100 GB but whose data is one float."""
    return helper.make_tensor(name, TensorProto.FLOAT, [25_000_000_000], [1.0])


def onnx_model_seeds():
    for path in sorted(glob.glob("golden/*/model.onnx")):
        add("onnx_model", read(path))
    relu = helper.make_node("Relu", ["w"], ["y"])
    graph = helper.make_graph(
        [relu], "huge", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [huge_float_tensor("w")]
    )
    add("onnx_model", helper.make_model(graph).SerializeToString())


def external_data_seeds():
    model = onnx.load("golden/ext_data/model.onnx", load_external_data=False)
    data = read("golden/ext_data/model.onnx.data")
    add("external_data", SEPARATOR.join([model.SerializeToString(), data]))
    hostile = [
        ("outside.data", "0", "4"),  # a symlink out of the folder
        ("../secret.data", "0", "4"),
        ("/etc/passwd", "0", "4"),
        ("sub", "0", "4"),  # a folder
        ("missing.data", "0", "4"),
        ("model.onnx.data", "18446744073709551615", "1"),
        ("model.onnx.data", "0", "100000000000"),
        ("model.onnx.data", "-1", "4"),
    ]
    for location, offset, length in hostile:
        changed = onnx.ModelProto()
        changed.CopyFrom(model)
        tensor = changed.graph.initializer[0]
        del tensor.external_data[:]
        for key, value in [("location", location), ("offset", offset), ("length", length)]:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        add("external_data", SEPARATOR.join([changed.SerializeToString(), data]))


def rules_seeds():
    for path in sorted(glob.glob("passes/*.rules")):
        add("rules", read(path))


def device_profile_seeds():
    for path in sorted(glob.glob("src/cost/devices/*.toml")):
        add("device_profile", read(path))


def npy_bytes(array, version=None):
    out = io.BytesIO()
    if version is None:
        np.save(out, array)
    else:
        np.lib.format.write_array(out, array, version=version)
    return out.getvalue()


def npy_seeds():
    for dtype in ["<f2", "<f4", "<f8", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "|b1"]:
        add("npy", npy_bytes(np.arange(6).reshape(2, 3).astype(dtype)))
    add("npy", npy_bytes(np.float32(3.5)))
    add("npy", npy_bytes(np.zeros((0, 4), np.float32)))
    add("npy", npy_bytes(np.ones((2, 2), np.float32), version=(2, 0)))
    add("npy", npy_bytes(np.ones((2, 2), np.float32), version=(3, 0)))
    add("npy", npy_bytes(np.asfortranarray(np.ones((2, 3), np.float32))))
    add("npy", npy_bytes(np.ones(3, ">f4")))
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (25000000000,), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    claims_100_gb = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(4)
    add("npy", claims_100_gb)


def tensor_proto_seeds():
    for path in sorted(glob.glob("golden/*/test_data_set_*/*.pb")):
        add("tensor_proto", read(path))
    add("tensor_proto", huge_float_tensor("x").SerializeToString())
    add("tensor_proto", helper.make_tensor("b", TensorProto.BOOL, [3], [1, 0, 1]).SerializeToString())
    add("tensor_proto", helper.make_tensor("h", TensorProto.FLOAT16, [2], np.ones(2, np.float16), raw=False).SerializeToString())


def test_data_set_seeds():
    for folder in sorted(glob.glob("golden/*/test_data_set_*")):
        inputs = sorted(glob.glob(os.path.join(folder, "input_*.pb")))
        outputs = sorted(glob.glob(os.path.join(folder, "output_*.pb")))
        files = [read(path) for path in inputs + outputs]
        add("test_data_set", bytes([len(inputs) % 4]) + SEPARATOR.join(files))


if __name__ == "__main__":
    onnx_model_seeds()
    external_data_seeds()
    rules_seeds()
    device_profile_seeds()
    npy_seeds()
    tensor_proto_seeds()
    test_data_set_seeds()

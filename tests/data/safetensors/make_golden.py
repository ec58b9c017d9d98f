#!/usr/bin/env python3
"""Golden safetensors files for tests/test_safetensors.cpp, written by an independent reference.

A writer and a reader of the safetensors format built only on struct, json and numpy (no safetensors package),
following the reference implementation's layout rules (huggingface/safetensors, safetensors/src/tensor.rs):
bytes 0..7 hold N (u64, little-endian), then N bytes of compact JSON ("__metadata__" first, then the tensors sorted
by dtype, larger alignment first in the reference's Dtype order, then by name), padded with spaces to a multiple of
8, then the data in the same order. The reader applies the reference's validation rules and checks every file
written here reads back to what was written.

    /usr/bin/python3 tests/data/safetensors/make_golden.py [--out FOLDER]   # default: this script's folder

Float16 values are numpy's astype(float16) (round to nearest, ties to even); bfloat16 values are rounded to
nearest, ties to even, with integer arithmetic on the float32 bits (any NaN becomes 0x7FC0, as PyTorch does).
"""
import argparse
import json
import os
import struct

import numpy as np

# The reference's Dtype enum order (the writer sorts by it, descending), with element sizes in bytes.
DTYPES = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
          "C64", "F64", "I64", "U64"]
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
         "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8, "I64": 8, "U64": 8}
NUMPY = {"BOOL": "<u1", "U8": "<u1", "I8": "<i1", "I16": "<i2", "U16": "<u2", "F16": "<f2", "BF16": "<u2",
         "I32": "<i4", "U32": "<u4", "F32": "<f4", "F64": "<f8", "I64": "<i8", "U64": "<u8"}


def serialize(tensors, metadata=None):
    """tensors: {name: (dtype, shape, bytes)}; metadata: {str: str} or None. Returns the file's bytes."""
    order = sorted(tensors.items(), key=lambda item: (-DTYPES.index(item[1][0]), item[0].encode("utf-8")))
    header = {}
    if metadata is not None:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    offset = 0
    for name, (dtype, shape, data) in order:
        count = int(np.prod(shape, dtype=np.uint64)) if shape else 1
        assert len(data) == count * SIZES[dtype], name
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(data for _, (_, _, data) in order)


def deserialize(blob):
    """The reference's checks; returns (metadata, {name: (dtype, shape, bytes)})."""
    if len(blob) < 8:
        raise ValueError("HeaderTooSmall")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > 100_000_000:
        raise ValueError("HeaderTooLarge")
    if 8 + n > len(blob):
        raise ValueError("InvalidHeaderLength")
    text = blob[8:8 + n].decode("utf-8")  # UnicodeDecodeError: InvalidHeader

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("DuplicateName")
        return dict(pairs)

    header = json.loads(text, object_pairs_hook=no_duplicates)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("InvalidMetadata")
    entries = sorted(header.items(), key=lambda item: tuple(item[1]["data_offsets"]))
    position, data = 0, blob[8 + n:]
    out = {}
    for name, entry in entries:
        if set(entry) != {"dtype", "shape", "data_offsets"} or entry["dtype"] not in SIZES:
            raise ValueError("InvalidHeaderDeserialization")
        begin, end = entry["data_offsets"]
        if begin != position or end < begin:
            raise ValueError("InvalidOffset " + name)
        count = 1
        for d in entry["shape"]:
            if not isinstance(d, int) or d < 0:
                raise ValueError("InvalidNumber")
            count *= d
        if count * SIZES[entry["dtype"]] >= 2 ** 64:
            raise ValueError("ValidationOverflow")
        if end - begin != count * SIZES[entry["dtype"]]:
            raise ValueError("TensorInvalidInfo")
        position = end
        out[name] = (entry["dtype"], tuple(entry["shape"]), data[begin:end])
    if position != len(data):
        raise ValueError("MetadataIncompleteBuffer")
    return metadata, out


def to_float32(dtype, data):
    if dtype == "BF16":
        return (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view("<f4")
    return np.frombuffer(data, NUMPY[dtype]).astype(np.float32)


def bfloat16_bits(values):
    bits = np.asarray(values, "<f4").view("<u4").astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    return np.where(np.isnan(np.asarray(values, "<f4")), np.uint16(0x7FC0), rounded).astype("<u2")


def tensor(dtype, array, shape=None):
    array = np.array(array, NUMPY[dtype], order="C")  # keeps a 0-d array 0-d (ascontiguousarray would not)
    return (dtype, list(array.shape if shape is None else shape), array.tobytes())


def golden_files():
    """{file name: bytes}: the committed golden files."""
    files = {}
    f32 = np.array([0.0, -0.0, 1.0, -2.5, 3.14159265, 1e-45, 1.17549435e-38, 3.4028235e38, np.inf, -np.inf],
                   np.float32)
    files["f32.safetensors"] = serialize({
        "values": tensor("F32", f32),
        "matrix": tensor("F32", np.arange(6, dtype=np.float32).reshape(2, 3) / 8),
        "scalar": tensor("F32", np.array(7.5, np.float32)),
        "empty": tensor("F32", np.zeros(0, np.float32), shape=[0]),
        "rank4": tensor("F32", np.linspace(-1, 1, 24, dtype=np.float32).reshape(1, 2, 3, 4)),
    })
    # float32 values that exercise every branch of float -> float16: exact, ties to even, subnormals (2^-24 is the
    # smallest, 2^-25 ties to zero), overflow to Inf (65520 rounds up), Inf, NaN, signed zero.
    half_source = np.array([0.0, -0.0, 1.0, -1.0, 0.1, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 2.0 ** -14,
                            2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 3 * 2.0 ** -26, 5.9604645e-08 * 1023,
                            6.1e-5, 1.0009765625, 1.00048828125, 1.00146484375, -3.3333333, np.inf, -np.inf, np.nan],
                           np.float32)
    half = half_source.astype("<f2")
    files["f16.safetensors"] = serialize({
        "source": tensor("F32", half_source),
        "half": tensor("F16", half),
        "half_as_f32": tensor("F32", half.astype(np.float32)),
    })
    bf_source = np.array([0.0, -0.0, 1.0, -1.0, 0.1, 3.14159265, 1.00390625, 1.005859375, 1.01171875, 3.4e38,
                          3.3961776e38, 1e-40, -1e-45, np.inf, -np.inf, np.nan, -np.nan], np.float32)
    bf = bfloat16_bits(bf_source)
    files["bf16.safetensors"] = serialize({
        "source": tensor("F32", bf_source),
        "bf16": ("BF16", [len(bf)], bf.tobytes()),
        "bf16_as_f32": tensor("F32", to_float32("BF16", bf.tobytes())),
    })
    f64 = np.array([0.0, 1.0 / 3.0, -2.0 ** -1074, 1.7976931348623157e308, 1e-310, np.pi, -np.inf], np.float64)
    files["f64.safetensors"] = serialize({"values": tensor("F64", f64), "as_f32": tensor("F32", f64.astype(np.float32))},
                                         {"format": "pt", "producer": "make_golden.py"})
    # Several dtypes and names that sort differently bytewise and by dtype; metadata that needs escaping.
    files["mixed.safetensors"] = serialize({
        "b.bias": tensor("F16", np.array([0.5, -0.25], np.float32).astype("<f2")),
        "a.weight": tensor("BF16", bfloat16_bits(np.array([1.5, 2.5, -3.0], np.float32))),
        "B.upper": tensor("F32", np.array([1.0], np.float32)),
        "ids": tensor("I64", np.array([-1, 2 ** 40, 3], np.int64)),
        "mask": tensor("BOOL", np.array([1, 0, 1], np.uint8)),
        "bytes": tensor("U8", np.array([0, 255, 7], np.uint8)),
        "counts": tensor("I32", np.array([[1, -2], [3, 4]], np.int32)),
        "double": tensor("F64", np.array([0.125], np.float64)),
        "\u00e9t\u00e9": tensor("F32", np.array([2.0], np.float32)),
    }, {"format": "pt", "note": "line\nbreak \"quoted\" tab\t \u00fcml\u00e4ut \u0001", "empty": ""})
    files["no_tensors.safetensors"] = serialize({}, {"format": "pt"})
    # A checkpoint sharded over two files, with its index (names as Hugging Face writes them).
    shard1 = {"model.embed.weight": tensor("F32", np.arange(8, dtype=np.float32).reshape(4, 2)),
              "model.layers.0.weight": tensor("BF16", bfloat16_bits(np.array([1.0, -2.0], np.float32)))}
    shard2 = {"model.layers.1.weight": tensor("F16", np.array([0.5, 0.75, 1.0], np.float32).astype("<f2")),
              "lm_head.weight": tensor("F32", np.array([[9.0, 8.0]], np.float32))}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    files["sharded/" + names[0]] = serialize(shard1, {"format": "pt"})
    files["sharded/" + names[1]] = serialize(shard2, {"format": "pt"})
    total = sum(len(t[2]) for t in list(shard1.values()) + list(shard2.values()))
    weight_map = {name: names[0] for name in shard1}
    weight_map.update({name: names[1] for name in shard2})
    index = {"metadata": {"total_size": total}, "weight_map": {k: weight_map[k] for k in sorted(weight_map)}}
    files["sharded/model.safetensors.index.json"] = (json.dumps(index, indent=2) + "\n").encode("utf-8")
    return files


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    with np.errstate(over="ignore"):  # 1e6 -> float16 and 1.8e308 -> float32 overflow to Inf on purpose
        files = golden_files()
    for name, blob in files.items():
        path = os.path.join(args.out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if name.endswith(".safetensors"):  # what was written reads back, every rule checked
            metadata, tensors = deserialize(blob)
            assert serialize(tensors, metadata) == blob, name
        with open(path, "wb") as f:
            f.write(blob)
    print("wrote", len(files), "files to", args.out)


if __name__ == "__main__":
    main()

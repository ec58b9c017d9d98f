#!/usr/bin/env python3
"""Golden files for tests/test_hf_vit.cpp: two tiny random Hugging Face ViT checkpoints and their outputs.

Run from the repository root (only numpy is needed; no PyTorch, no transformers):

    python3 tests/data/hf_vit/make_golden.py

It rewrites, for each configuration below, tests/data/hf_vit/<name>/:
  config.json    the configuration as transformers' ViTConfig.save_pretrained writes it
  weights.json   the index of weights.bin: {"tensors": [{"name", "shape", "offset"}, ...]} (offset in floats)
  weights.bin    every tensor's float32 values, little-endian, row-major, one after the other
  golden.json    {"images": {"shape", "values"}, "output": "cls_hidden_state" | "logits",
                  "expected": {"shape", "values"}}

The weights are float32 (as a checkpoint stores them); the reference forward pass runs in float64 on those float32
values and follows transformers' modeling_vit.py (ViTEmbeddings, ViTSelfAttention, ViTSelfOutput, ViTIntermediate,
ViTOutput, ViTLayer, ViTModel, ViTForImageClassification) step by step, in eval mode (dropout off). The output of
"vit_model" is the final LayerNorm's CLS row (last_hidden_state[:, 0]); of "vit_classifier" the logits. The script
is deterministic (fixed seeds): running it again reproduces the committed files byte for byte.
"""

import json
import math
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# Two configurations that between them exercise every mapping rule: the ViTModel naming with its pooler, q/k/v
# biases and layer_norm_eps 1e-12 (transformers' default); the ViTForImageClassification naming ("vit." prefix and
# classifier) on a non-square image ([height, width]) without q/k/v biases, layer_norm_eps 1e-6, 4 heads and an
# intermediate size of 3x hidden.
CONFIGS = {
    "vit_model": {
        "architectures": ["ViTModel"],
        "attention_probs_dropout_prob": 0.0,
        "encoder_stride": 4,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 16,
        "image_size": 8,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "model_type": "vit",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "patch_size": 4,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": "4.46.0",
    },
    "vit_classifier": {
        "architectures": ["ViTForImageClassification"],
        "attention_probs_dropout_prob": 0.0,
        "encoder_stride": 4,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 16,
        "id2label": {"0": "cat", "1": "dog", "2": "bird"},
        "image_size": [8, 12],
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "label2id": {"bird": 2, "cat": 0, "dog": 1},
        "layer_norm_eps": 1e-06,
        "model_type": "vit",
        "num_attention_heads": 4,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "patch_size": 4,
        "qkv_bias": False,
        "torch_dtype": "float32",
        "transformers_version": "4.46.0",
    },
}
SEEDS = {"vit_model": 20240611, "vit_classifier": 20240612}
BATCH = 2


def pair(v):
    return (v[0], v[1]) if isinstance(v, list) else (v, v)


def make_weights(config, classifier, rng):
    """The state dict of ViTModel(config) (with its pooler) or ViTForImageClassification(config), as float32."""
    d, inter = config["hidden_size"], config["intermediate_size"]
    c = config["num_channels"]
    (h, w), (p, _) = pair(config["image_size"]), pair(config["patch_size"])
    tokens = (h // p) * (w // p) + 1
    prefix = "vit." if classifier else ""

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def around_one(shape):  # LayerNorm weights: not all ones, so a swapped gamma/beta cannot pass
        return (1.0 + rng.standard_normal(shape) * 0.1).astype(np.float32)

    weights = {}

    def put(name, array):
        weights[prefix + name] = array

    put("embeddings.cls_token", normal((1, 1, d), 0.5))
    put("embeddings.position_embeddings", normal((1, tokens, d), 0.5))
    put("embeddings.patch_embeddings.projection.weight", normal((d, c, p, p), 1.0 / math.sqrt(c * p * p)))
    put("embeddings.patch_embeddings.projection.bias", normal((d,), 0.1))
    for i in range(config["num_hidden_layers"]):
        layer = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            put(layer + f"attention.attention.{proj}.weight", normal((d, d), 1.0 / math.sqrt(d)))
            if config["qkv_bias"]:
                put(layer + f"attention.attention.{proj}.bias", normal((d,), 0.1))
        put(layer + "attention.output.dense.weight", normal((d, d), 1.0 / math.sqrt(d)))
        put(layer + "attention.output.dense.bias", normal((d,), 0.1))
        put(layer + "intermediate.dense.weight", normal((inter, d), 1.0 / math.sqrt(d)))
        put(layer + "intermediate.dense.bias", normal((inter,), 0.1))
        put(layer + "output.dense.weight", normal((d, inter), 1.0 / math.sqrt(inter)))
        put(layer + "output.dense.bias", normal((d,), 0.1))
        put(layer + "layernorm_before.weight", around_one((d,)))
        put(layer + "layernorm_before.bias", normal((d,), 0.1))
        put(layer + "layernorm_after.weight", around_one((d,)))
        put(layer + "layernorm_after.bias", normal((d,), 0.1))
    put("layernorm.weight", around_one((d,)))
    put("layernorm.bias", normal((d,), 0.1))
    if classifier:
        labels = len(config["id2label"])
        weights["classifier.weight"] = normal((labels, d), 1.0 / math.sqrt(d))
        weights["classifier.bias"] = normal((labels,), 0.1)
    else:  # ViTModel(config) has add_pooling_layer=True: its checkpoints carry the pooler
        put("pooler.dense.weight", normal((d, d), 1.0 / math.sqrt(d)))
        put("pooler.dense.bias", normal((d,), 0.1))
    return weights


# ---- the reference forward pass, float64, after modeling_vit.py ----

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):  # ACT2FN["gelu"]: torch.nn.functional.gelu, the exact erf form
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, weight, bias, eps):  # nn.LayerNorm: biased variance over the last axis
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x, weight, bias):  # nn.Linear: x W^T + b
    y = x @ weight.T
    return y if bias is None else y + bias


def conv2d_patches(pixels, weight, bias, p):
    """nn.Conv2d(c, d, kernel_size=p, stride=p)(pixels).flatten(2).transpose(1, 2): [batch, patches, d]."""
    batch, c, h, w = pixels.shape
    rows, cols = h // p, w // p
    out = np.zeros((batch, rows * cols, weight.shape[0]))
    for r in range(rows):
        for q in range(cols):
            window = pixels[:, :, r * p:(r + 1) * p, q * p:(q + 1) * p]  # [batch, c, p, p]
            out[:, r * cols + q, :] = np.einsum("bcij,dcij->bd", window, weight) + bias
    return out


def forward(config, weights, pixels, classifier):
    g = {name: value.astype(np.float64) for name, value in weights.items()}
    prefix = "vit." if classifier else ""
    W = lambda name: g[prefix + name]  # noqa: E731
    eps = config["layer_norm_eps"]
    d, heads = config["hidden_size"], config["num_attention_heads"]
    head_size = d // heads
    p = pair(config["patch_size"])[0]
    batch = pixels.shape[0]

    # ViTEmbeddings.forward
    embeddings = conv2d_patches(pixels, W("embeddings.patch_embeddings.projection.weight"),
                                W("embeddings.patch_embeddings.projection.bias"), p)
    cls_tokens = np.broadcast_to(W("embeddings.cls_token"), (batch, 1, d))
    embeddings = np.concatenate([cls_tokens, embeddings], axis=1)
    hidden = embeddings + W("embeddings.position_embeddings")

    def transpose_for_scores(x):  # [batch, tokens, d] -> [batch, heads, tokens, head_size]
        return x.reshape(x.shape[0], x.shape[1], heads, head_size).transpose(0, 2, 1, 3)

    for i in range(config["num_hidden_layers"]):
        L = lambda name: W(f"encoder.layer.{i}." + name)  # noqa: E731
        bias = (lambda name: L(name)) if config["qkv_bias"] else (lambda name: None)
        # ViTLayer.forward: self-attention on layernorm_before(hidden)
        x = layer_norm(hidden, L("layernorm_before.weight"), L("layernorm_before.bias"), eps)
        key = transpose_for_scores(linear(x, L("attention.attention.key.weight"), bias("attention.attention.key.bias")))
        value = transpose_for_scores(
            linear(x, L("attention.attention.value.weight"), bias("attention.attention.value.bias")))
        query = transpose_for_scores(
            linear(x, L("attention.attention.query.weight"), bias("attention.attention.query.bias")))
        # eager_attention_forward
        scores = (query @ key.transpose(0, 1, 3, 2)) * head_size ** -0.5
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        context = (probs @ value).transpose(0, 2, 1, 3).reshape(batch, -1, d)
        # ViTSelfOutput, then the first residual connection
        attention_output = linear(context, L("attention.output.dense.weight"), L("attention.output.dense.bias"))
        hidden = attention_output + hidden
        # layernorm_after, ViTIntermediate, ViTOutput (with the second residual connection)
        y = layer_norm(hidden, L("layernorm_after.weight"), L("layernorm_after.bias"), eps)
        y = gelu(linear(y, L("intermediate.dense.weight"), L("intermediate.dense.bias")))
        hidden = linear(y, L("output.dense.weight"), L("output.dense.bias")) + hidden

    # ViTModel: the final layernorm over every token
    sequence_output = layer_norm(hidden, W("layernorm.weight"), W("layernorm.bias"), eps)
    if classifier:  # ViTForImageClassification: classifier(sequence_output[:, 0, :])
        return linear(sequence_output[:, 0, :], g["classifier.weight"], g["classifier.bias"])
    return sequence_output[:, 0, :]


def floats(array):
    """Values as Python floats: repr of a float64 is the shortest text that reads back to the same value, so a
    float32 value reads back exactly as float (and the float64 outputs exactly as double)."""
    return [float(v) for v in np.asarray(array, dtype=np.float64).ravel()]


def write(name, config):
    classifier = config["architectures"] == ["ViTForImageClassification"]
    rng = np.random.default_rng(SEEDS[name])
    weights = make_weights(config, classifier, rng)
    c = config["num_channels"]
    h, w = pair(config["image_size"])
    images = rng.standard_normal((BATCH, c, h, w)).astype(np.float32)
    expected = forward(config, weights, images.astype(np.float64), classifier)

    folder = os.path.join(HERE, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    index, offset = [], 0
    with open(os.path.join(folder, "weights.bin"), "wb") as f:
        for tensor_name in sorted(weights):
            array = weights[tensor_name]
            f.write(struct.pack("<%df" % array.size, *array.ravel()))
            index.append({"name": tensor_name, "shape": list(array.shape), "offset": offset})
            offset += array.size
    with open(os.path.join(folder, "weights.json"), "w") as f:
        json.dump({"tensors": index}, f, indent=1)
        f.write("\n")
    golden = {
        "images": {"shape": list(images.shape), "values": floats(images)},
        "output": "logits" if classifier else "cls_hidden_state",
        "expected": {"shape": list(expected.shape), "values": floats(expected)},
    }
    with open(os.path.join(folder, "golden.json"), "w") as f:
        json.dump(golden, f)
        f.write("\n")
    print(f"{name}: {len(weights)} tensors, {offset} floats, output {golden['output']} {list(expected.shape)}")


if __name__ == "__main__":
    for config_name, config_value in CONFIGS.items():
        write(config_name, config_value)

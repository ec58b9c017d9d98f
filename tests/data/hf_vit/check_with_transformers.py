#!/usr/bin/env python3
"""transformers' own ViT against the golden files the library is tested on.

tests/test_hf_vit.cpp holds the library's loader and forward pass to golden.json, which make_golden.py computes in
float64 with numpy, following transformers' modeling_vit.py step by step. This script checks that transcription
against transformers itself where torch and transformers are installed (the GPU machine:
scripts/gpu/run_on_device.sh): ViTModel / ViTForImageClassification built from each config.json, the weights of
weights.bin loaded strictly (every tensor, no other), run in float64 on the golden images, must give the expected
CLS hidden state or logits within relative 1e-9.

Usage: python3 tests/data/hf_vit/check_with_transformers.py [folder holding vit_model and vit_classifier]
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTModel

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-9


def load_weights(folder):
    index = json.load(open(os.path.join(folder, "weights.json")))
    values = np.fromfile(os.path.join(folder, "weights.bin"), dtype="<f4")
    weights = {}
    for entry in index["tensors"]:
        count = int(np.prod(entry["shape"]))
        chunk = values[entry["offset"]:entry["offset"] + count]
        weights[entry["name"]] = torch.from_numpy(chunk.copy()).reshape(entry["shape"])
    return weights


def check(folder):
    config = ViTConfig.from_pretrained(folder)
    golden = json.load(open(os.path.join(folder, "golden.json")))
    classifier = golden["output"] == "logits"
    model = (ViTForImageClassification if classifier else ViTModel)(config)
    model.load_state_dict(load_weights(folder), strict=True)
    model = model.double().eval()
    images = torch.tensor(golden["images"]["values"], dtype=torch.float64).reshape(golden["images"]["shape"])
    expected = torch.tensor(golden["expected"]["values"], dtype=torch.float64).reshape(golden["expected"]["shape"])
    with torch.no_grad():
        out = model(pixel_values=images)
        got = out.logits if classifier else out.last_hidden_state[:, 0]
    error = (got - expected).abs().max().item() / max(1.0, expected.abs().max().item())
    ok = error <= TOLERANCE
    print(f"{os.path.basename(folder)} ({type(model).__name__}, {golden['output']}): relative error {error:.3g} "
          f"-> {'ok' if ok else 'FAILED'}")
    return ok


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else HERE
    folders = sorted(os.path.join(root, name) for name in os.listdir(root)
                     if os.path.isfile(os.path.join(root, name, "golden.json")))
    if not folders:
        sys.exit(f"check_with_transformers: no ViT folders in {root}")
    results = [check(folder) for folder in folders]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()

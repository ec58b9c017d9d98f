#!/usr/bin/env python3
"""transformers' own models against the golden files the library is tested on.

tests/test_language_model_oracle.cpp holds the library to golden.safetensors (the logits, the loss and every LoRA
gradient of a left-padded batch, relative 1e-5), and make_golden.py computes those with an independent PyTorch
implementation written from the architecture description. This script closes the chain where torch, transformers
and peft are installed (the GPU machine: scripts/gpu/run_on_device.sh): transformers' LlamaForCausalLM and
GPT2LMHeadModel load each committed folder (config.json, model.safetensors), peft loads its adapter, and the same
batch must give the same logits at every real (non-padding) position, the same loss and the same LoRA gradients.

Usage: python3 tests/data/language_models/check_with_transformers.py [folder holding the model folders]
Exit status 0 when every model agrees within relative 1e-5 (the LoRA gradients 2e-5).
"""
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-5  # logits and loss; the LoRA gradients 2e-5, as the library is held to
GRADIENT_TOLERANCE = 2e-5


def relative(a, b):
    return (a.double() - b.double()).abs().max().item() / max(1.0, b.double().abs().max().item())


def check(folder):
    golden = load_file(os.path.join(folder, "golden.safetensors"))
    ids = golden["input_ids"].long()
    counted = golden["counted"]
    batch, tokens = ids.shape
    real = ids != 0  # pad 0 on the left, BOS 1, EOS 2, the rest >= 3
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # from the first real token, as the library counts
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, os.path.join(folder, "adapter"), is_trainable=True)
    model.eval()  # dropout off; the adapters still take gradients
    logits = model(input_ids=ids, attention_mask=real.long(), position_ids=positions).logits
    vocabulary = logits.shape[-1]
    expected = golden["logits"].reshape(batch, tokens, vocabulary)
    logits_error = relative(logits[real], expected[real])

    labels = torch.full((batch, tokens), -100, dtype=torch.long)
    labels[:, :-1] = torch.where(counted[:, 1:] > 0, ids[:, 1:], torch.tensor(-100))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocabulary), labels.reshape(-1), ignore_index=-100)
    loss.backward()
    loss_error = relative(loss.detach().reshape(1), golden["loss"])

    gradient_error, compared = 0.0, 0
    for name, parameter in model.named_parameters():
        if "lora_" not in name:
            continue
        key = name.replace(".default", "") + ".grad"
        if key not in golden:
            raise KeyError(f"{folder}: {name} has no golden gradient {key}")
        gradient_error = max(gradient_error, relative(parameter.grad, golden[key]))
        compared += 1
    wanted = sum(1 for key in golden if key.endswith(".grad"))
    if compared != wanted:
        raise ValueError(f"{folder}: peft adapted {compared} tensors, the golden file has gradients for {wanted}")
    ok = max(logits_error, loss_error) <= TOLERANCE and gradient_error <= GRADIENT_TOLERANCE
    print(f"{os.path.basename(folder)} ({type(base).__name__}): logits {logits_error:.3g}, loss {loss_error:.3g}, "
          f"{compared} LoRA gradients {gradient_error:.3g} -> {'ok' if ok else 'FAILED'}")
    return ok


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else HERE
    folders = sorted(os.path.join(root, name) for name in os.listdir(root)
                     if os.path.isfile(os.path.join(root, name, "golden.safetensors")))
    if not folders:
        sys.exit(f"check_with_transformers: no model folders in {root}")
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
          f"peft {__import__('peft').__version__}")
    results = [check(folder) for folder in folders]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()

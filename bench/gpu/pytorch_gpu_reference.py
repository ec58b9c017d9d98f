#!/usr/bin/env python3
"""PyTorch + PEFT reference for bench/gpu/bench_cuda: the same shapes on the same GPU, timed the same way.

  lora_versus_base   a PEFT LoRA Linear (r = 8, alpha = 16, base frozen) forward + backward (input gradient too)
                     against the two base GEMMs y = x W^T and dx = dy W; shapes 6304 x 768 x 768 (ViT-B projection,
                     batch 32 x 197 tokens) and 4096 x 4096 x 4096
  vit_training_step  one ViT-B/16-sized step (224x224x3, patch 16, width 768, depth 12, 12 heads, MLP 3072, PEFT LoRA
                     r = 8 on q and v, batch 32): zero_grad, forward, cross-entropy on two classes of a 10-way head,
                     backward, AdamW on the adapters and the head
  lm_lora_step       one LoRA step of transformers' LlamaForCausalLM at Llama-3.2-1B's shapes (random weights, tied
                     head), PEFT LoRA r = 8, alpha = 32 on q_proj and v_proj, batch 4 x 512 tokens: zero_grad,
                     forward, next-token cross-entropy over every token, backward, Adam on the adapters (tokens/s);
                     needs transformers (skipped without it)
Each mode: fp32 (TF32 off), tf32 (torch.backends.cuda.matmul.allow_tf32), bf16 (autocast to bfloat16). CUDA events
around each side, median over the repeats, printed in ms.

Optional: needs torch with CUDA and peft. Exits 0 with a message when either is missing or there is no GPU.
Usage: python3 bench/gpu/pytorch_gpu_reference.py [--repeats 30]
"""
import argparse
import contextlib
import statistics
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as functional
except ImportError:
    print("pytorch_gpu_reference: torch is not installed; skipped")
    sys.exit(0)
if not torch.cuda.is_available():
    print("pytorch_gpu_reference: torch has no usable CUDA device; skipped")
    sys.exit(0)
try:
    from peft import LoraConfig, get_peft_model
except ImportError:
    print("pytorch_gpu_reference: peft is not installed (pip install peft); skipped")
    sys.exit(0)

DEVICE = torch.device("cuda")


def set_mode(mode):
    """fp32 / tf32 switch the matmul precision; bf16 is an autocast context around the timed work."""
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    if mode == "bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def timed_ms(work, repeats):
    """Median milliseconds of work() between two CUDA events, after two warm-up calls."""
    for _ in range(2):
        work()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


class Projection(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x):
        return self.proj(x)


def lora_versus_base(rows, width, rank, mode, repeats):
    autocast = set_mode(mode)
    model = get_peft_model(Projection(width), LoraConfig(r=rank, lora_alpha=16, target_modules=["proj"])).to(DEVICE)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, 0.0, 0.01)
    layer = model.base_model.model.proj
    weight = getattr(layer, "base_layer", layer).weight  # the frozen base weight inside PEFT's wrapper
    x = torch.randn(rows, width, device=DEVICE, requires_grad=True)
    dy = torch.randn(rows, width, device=DEVICE)

    def base():
        with autocast(), torch.no_grad():
            x @ weight.t()
            dy @ weight

    def lora():
        with autocast():
            y = model(x)
        y.backward(dy)

    return timed_ms(base, repeats), timed_ms(lora, repeats)


class Block(nn.Module):
    """Pre-LN block with separate q, k, v projections (the names PEFT targets), as treelora's ViT."""

    def __init__(self, width, heads, hidden):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x):
        b, n, w = x.shape
        h = self.ln1(x)
        split = lambda t: t.view(b, n, self.heads, w // self.heads).transpose(1, 2)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        p = torch.softmax(q @ k.transpose(-1, -2) / (w // self.heads) ** 0.5, dim=-1)
        x = x + self.o((p @ v).transpose(1, 2).reshape(b, n, w))
        return x + self.fc2(functional.gelu(self.fc1(self.ln2(x))))


class ViT(nn.Module):
    def __init__(self, image=224, channels=3, patch=16, width=768, depth=12, heads=12, hidden=3072, classes=10):
        super().__init__()
        self.patch_embed = nn.Conv2d(channels, width, patch, stride=patch)
        tokens = (image // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.zeros(1, tokens, width))
        self.blocks = nn.ModuleList(Block(width, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, classes)

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def vit_training_step(batch, mode, repeats):
    autocast = set_mode(mode)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q", "v"], modules_to_save=["head"])
    model = get_peft_model(ViT(), config).to(DEVICE)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-2)
    images = torch.randn(batch, 3, 224, 224, device=DEVICE)
    labels = torch.arange(batch, device=DEVICE) % 2
    mask = torch.full((10,), float("-inf"), device=DEVICE)
    mask[:2] = 0  # cross-entropy over two classes of the 10-way head, as treelora's allowed_classes

    def step():
        optimizer.zero_grad(set_to_none=False)
        with autocast():
            logits = model(images)
        loss = functional.cross_entropy(logits.float() + mask, labels)
        loss.backward()
        optimizer.step()

    return timed_ms(step, repeats)


def lm_lora_step(batch, tokens, mode, repeats):
    from transformers import LlamaConfig, LlamaForCausalLM

    autocast = set_mode(mode)
    config = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                         tie_word_embeddings=True)
    with torch.device(DEVICE):
        base = LlamaForCausalLM(config)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = (torch.arange(batch * tokens, device=DEVICE) * 7919 + 13) % config.vocab_size
    ids = ids.reshape(batch, tokens)
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]

    def step():
        optimizer.zero_grad(set_to_none=False)
        with autocast():
            logits = model(input_ids=ids).logits
        loss = functional.cross_entropy(logits.float().reshape(-1, config.vocab_size), labels.reshape(-1),
                                        ignore_index=-100)
        loss.backward()
        optimizer.step()

    ms = timed_ms(step, repeats)
    del model, base, optimizer
    torch.cuda.empty_cache()
    return ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for mode in ("fp32", "tf32", "bf16"):
        for rows, width in ((6304, 768), (4096, 4096)):
            base_ms, lora_ms = lora_versus_base(rows, width, 8, mode, args.repeats)
            print(f"lora_versus_base {rows}x{width}x{width} r=8 {mode}: base {base_ms:.3f} ms, "
                  f"lora {lora_ms:.3f} ms, lora/base {lora_ms / base_ms:.3f}")
    for mode in ("fp32", "tf32", "bf16"):
        ms = vit_training_step(32, mode, max(5, args.repeats // 3))
        print(f"vit_training_step ViT-B/16 batch 32 {mode}: {ms:.2f} ms/step, {32 / ms * 1e3:.1f} images/s")
    try:
        import transformers
    except ImportError:
        print("lm_lora_step: transformers is not installed; skipped")
        return
    for mode in ("fp32", "tf32", "bf16"):
        ms = lm_lora_step(4, 512, mode, 5)
        print(f"lm_lora_step Llama-3.2-1B shapes batch 4 x 512 {mode} (transformers {transformers.__version__}): "
              f"{ms:.2f} ms/step, {4 * 512 / ms * 1e3:.0f} tokens/s")


if __name__ == "__main__":
    main()

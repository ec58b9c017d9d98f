#!/usr/bin/env python3
"""PyTorch reference for bench_language_models' lm_lora_step: the same Llama shapes, LoRA and step, timed the same way.

One step = zero_grad, forward, next-token cross-entropy over every token, backward, Adam on the LoRA adapters
(q_proj and v_proj, r = 8, alpha = 32); the base weights are frozen, random N(0, 0.02). The model is written the way
transformers' eager LlamaForCausalLM computes it (RMSNorm in fp32, half-split RoPE, GQA by repeating key/value heads,
softmax(q k^T / sqrt(hd) + causal mask), SwiGLU, tied head). Prints the median step time and tokens per second.

Optional: needs torch (Debian: python3-torch; run it with /usr/bin/python3). Exits 0 with a message without it.
Usage: python3 bench/pytorch_lm_reference.py [--config smollm_135m|tiny] [--threads 2] [--repeats 5]
"""
import argparse
import math
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as functional
except ImportError:
    print("pytorch_lm_reference: torch is not installed (Debian: apt-get install python3-torch); skipped")
    sys.exit(0)

CONFIGS = {
    "tiny": dict(vocab=4096, d=256, inner=704, layers=6, heads=8, kv_heads=4, batch=8, tokens=256),
    "smollm_135m": dict(vocab=49152, d=576, inner=1536, layers=30, heads=9, kv_heads=3, batch=1, tokens=256),
}


class LoRALinear(nn.Module):
    def __init__(self, d_in, d_out, rank=0, alpha=32.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) * 0.02, requires_grad=False)
        self.rank = rank
        if rank:
            self.lora_a = nn.Parameter(torch.randn(rank, d_in) * 0.02)
            self.lora_b = nn.Parameter(torch.zeros(d_out, rank))
            self.scaling = alpha / rank

    def forward(self, x):
        y = functional.linear(x, self.weight)
        if self.rank:
            y = y + self.scaling * functional.linear(functional.linear(x, self.lora_a), self.lora_b)
        return y


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["d"], c["d"] // c["heads"]
        self.c, self.hd = c, hd
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(d), RMSNorm(d)
        self.q_proj, self.k_proj = LoRALinear(d, c["heads"] * hd, 8), LoRALinear(d, c["kv_heads"] * hd)
        self.v_proj, self.o_proj = LoRALinear(d, c["kv_heads"] * hd, 8), LoRALinear(c["heads"] * hd, d)
        self.gate_proj, self.up_proj = LoRALinear(d, c["inner"]), LoRALinear(d, c["inner"])
        self.down_proj = LoRALinear(c["inner"], d)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        H, KV, hd = self.c["heads"], self.c["kv_heads"], self.hd
        n = self.input_layernorm(x)
        q = self.q_proj(n).view(b, t, H, hd).transpose(1, 2)
        k = self.k_proj(n).view(b, t, KV, hd).transpose(1, 2)
        v = self.v_proj(n).view(b, t, KV, hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1)
        x = x + self.o_proj((p @ v).transpose(1, 2).reshape(b, t, H * hd))
        n = self.post_attention_layernorm(x)
        return x + self.down_proj(functional.silu(self.gate_proj(n)) * self.up_proj(n))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Parameter(torch.randn(c["vocab"], c["d"]) * 0.02, requires_grad=False)
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["layers"])])
        self.norm = RMSNorm(c["d"])
        hd = c["d"] // c["heads"]
        inv = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        angles = torch.arange(c["tokens"], dtype=torch.float64)[:, None] * inv
        angles = torch.cat([angles, angles], dim=-1)
        self.cos, self.sin = angles.cos().float(), angles.sin().float()
        self.mask = torch.full((c["tokens"], c["tokens"]), float("-inf")).triu(1)

    def forward(self, ids):
        x = self.embed_tokens[ids]
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.norm(x) @ self.embed_tokens.t()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="smollm_135m", choices=sorted(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = CONFIGS[args.config]
    model = Llama(c)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=1e-4)
    ids = torch.tensor([(i * 7919 + 13) % c["vocab"] for i in range(c["batch"] * c["tokens"])]).view(c["batch"], c["tokens"])
    labels = ids.clone()
    labels[:, :-1] = ids[:, 1:]
    labels[:, -1] = -100
    times = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        optimiser.zero_grad()
        logits = model(ids)
        loss = functional.cross_entropy(logits.view(-1, c["vocab"]), labels.view(-1), ignore_index=-100)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    t = statistics.median(times[1:])  # the first step warms the allocator up
    tokens = c["batch"] * c["tokens"]
    print(f"pytorch {torch.__version__} {args.config} threads={args.threads}: step {t * 1e3:.1f} ms, "
          f"{tokens / t:.1f} tokens/s, trainable {sum(p.numel() for p in params)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch reference for bench_strategy's vit_training_step: the same ViT, LoRA and shapes, timed the same way.

One training step = zero_grad, forward, cross-entropy on two classes of a shared 10-way head, backward, Adam on the
LoRA adapters (q and v, r = 8, alpha = 16) and the head; the backbone is frozen, as in treelora's main job.
Shapes: the demo ViT (28x28, patch 7, width 64, depth 4, heads 4, MLP ratio 2, batch 64) and ViT-B/16 layer sizes
(224x224x3, patch 16, width 768, 12 heads, MLP 3072, one block, batch 4). Prints the median step time in ms.

Optional: needs torch (Debian: python3-torch; run it with /usr/bin/python3). Exits 0 with a message without it.
Usage: python3 bench/pytorch_reference.py [--threads 2] [--repeats 30]
"""
import argparse
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as functional
except ImportError:
    print("pytorch_reference: torch is not installed (Debian: apt-get install python3-torch); skipped")
    sys.exit(0)


class LoRALinear(nn.Module):
    """y = W0 x + b + (alpha / r) B A x; W0 and b frozen, A Kaiming-uniform(a = sqrt 5), B zeros (PEFT's layout)."""

    def __init__(self, d_in, d_out, rank, alpha):
        super().__init__()
        self.base = nn.Linear(d_in, d_out)
        self.base.weight.requires_grad_(False)
        self.base.bias.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, d_in))
        self.lora_b = nn.Parameter(torch.zeros(d_out, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=5 ** 0.5)
        self.scaling = alpha / rank

    def forward(self, x):
        return self.base(x) + self.scaling * functional.linear(functional.linear(x, self.lora_a), self.lora_b)


class Block(nn.Module):
    def __init__(self, width, heads, hidden, rank, alpha):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.q = LoRALinear(width, width, rank, alpha)
        self.k, self.v = nn.Linear(width, width), LoRALinear(width, width, rank, alpha)
        self.o, self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x):
        b, n, w = x.shape
        h = self.ln1(x)
        split = lambda t: t.view(b, n, self.heads, w // self.heads).transpose(1, 2)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        p = torch.softmax(q @ k.transpose(-1, -2) / (w // self.heads) ** 0.5, dim=-1)
        x = x + self.o((p @ v).transpose(1, 2).reshape(b, n, w))
        return x + self.fc2(functional.gelu(self.fc1(self.ln2(x))))


class ViT(nn.Module):
    def __init__(self, image, channels, patch, width, depth, heads, mlp_ratio, classes=10, rank=8, alpha=16):
        super().__init__()
        self.patch, self.channels = patch, channels
        tokens = (image // patch) ** 2
        self.embed = nn.Linear(channels * patch * patch, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, width))
        self.blocks = nn.ModuleList(Block(width, heads, int(mlp_ratio * width), rank, alpha) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, classes)
        for name, p in self.named_parameters():  # frozen backbone: only LoRA and the head train
            p.requires_grad_("lora_" in name or name.startswith("head."))

    def forward(self, images):
        b = images.shape[0]
        x = images.unfold(2, self.patch, self.patch).unfold(3, self.patch, self.patch)
        x = x.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, self.channels * self.patch * self.patch)
        x = torch.cat([self.cls.expand(b, -1, -1), self.embed(x)], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def time_step(name, image, channels, patch, width, depth, heads, mlp_ratio, batch, repeats):
    torch.manual_seed(0)
    model = ViT(image, channels, patch, width, depth, heads, mlp_ratio)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(batch, channels, image, image)
    labels = torch.tensor([8 + i % 2 for i in range(batch)])
    mask = torch.full((10,), float("-inf"))
    mask[8:] = 0  # the current task's two classes, as treelora's masked cross-entropy
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        loss = functional.cross_entropy(model(x) + mask, labels)
        loss.backward()
        optimizer.step()
        if i >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - start)
    print(f"{name}: median step {1e3 * statistics.median(times):.2f} ms over {repeats} steps "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    time_step("vit_training_step/demo_batch64", 28, 1, 7, 64, 4, 4, 2.0, 64, args.repeats)
    time_step("vit_training_step/vit_b_layers_depth1_batch4", 224, 3, 16, 768, 1, 12, 4.0, 4, max(6, args.repeats // 5))


if __name__ == "__main__":
    main()

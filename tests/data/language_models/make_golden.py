#!/usr/bin/env python3
"""Golden data for tests/test_language_model_oracle.cpp: Llama and GPT-2 written here in PyTorch from the
architecture description (docs/language-models.md), with Hugging Face's parameter names, independent of the C++.

For each tiny configuration it writes <out>/<name>/:
  config.json, model.safetensors        a Hugging Face checkpoint with random weights (tied heads absent)
  adapter/                              a PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors), B != 0
  golden.safetensors                    input_ids and answer mask of a left-padded batch (as F32), the logits, the
                                        loss, every LoRA gradient ("<PEFT key>.grad"), and the loss before each of
                                        ten Adam steps on the adapters ("losses")
Conventions the C++ library documents and this file follows: left padding; a token's position counts from its
sequence's first real token; padding is masked out of attention and a padding token attends to itself only; the
loss is next-token cross-entropy over the answer tokens (answer and EOS), the mean over counted tokens; RoPE's
cos/sin are computed in float64 and rounded.

Run:  python3 tests/data/language_models/make_golden.py [out folder]   (default: this script's folder)
Needs torch (Debian: python3-torch) and numpy; deterministic on CPU for a given torch version.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float32)


def write_safetensors(path, tensors, metadata=None):
    header = {}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name].detach().cpu().numpy().astype(np.float32))
        blob = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def write_json(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


class LoRALinear(torch.nn.Module):
    """y = x W^T + b + (alpha / r) B A x; W is [out, in] (conv1d=True: stored [in, out], GPT-2's Conv1D)."""

    def __init__(self, fan_in, fan_out, bias, lora_rank, alpha, conv1d=False):
        super().__init__()
        self.conv1d = conv1d
        self.weight = torch.nn.Parameter(torch.randn(*( (fan_in, fan_out) if conv1d else (fan_out, fan_in))) * 0.2,
                                         requires_grad=False)
        self.bias = torch.nn.Parameter(torch.randn(fan_out) * 0.1, requires_grad=False) if bias else None
        self.rank = lora_rank
        if lora_rank:
            self.lora_A = torch.nn.Parameter(torch.randn(lora_rank, fan_in) * 0.3)
            self.lora_B = torch.nn.Parameter(torch.randn(fan_out, lora_rank) * 0.3)
            self.scaling = alpha / lora_rank

    def forward(self, x):
        y = x @ self.weight if self.conv1d else x @ self.weight.t()
        if self.bias is not None:
            y = y + self.bias
        if self.rank:
            y = y + self.scaling * ((x @ self.lora_A.t()) @ self.lora_B.t())
        return y


def layout(ids, pad_id):
    """Left padding per sequence, positions from the first real token, and the additive mask [B, 1, T, T]."""
    batch, tokens = ids.shape
    pads = [int((ids[b] == pad_id).long().cumprod(0).sum()) for b in range(batch)]
    positions = torch.zeros(batch, tokens, dtype=torch.long)
    mask = torch.full((batch, 1, tokens, tokens), float("-inf"))
    for b in range(batch):
        for t in range(tokens):
            positions[b, t] = max(t - pads[b], 0)
            if t < pads[b]:
                mask[b, 0, t, t] = 0
            else:
                mask[b, 0, t, pads[b]:t + 1] = 0
    return positions, mask


def attention(q, k, v, mask, heads, kv_heads, head_dim):
    batch, tokens, _ = q.shape
    q = q.view(batch, tokens, heads, head_dim).transpose(1, 2)
    k = k.view(batch, tokens, kv_heads, head_dim).transpose(1, 2)
    v = v.view(batch, tokens, kv_heads, head_dim).transpose(1, 2)
    group = heads // kv_heads
    k = k.repeat_interleave(group, dim=1)  # query head h reads kv head h // group
    v = v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + mask
    p = torch.softmax(scores, dim=-1)
    return (p @ v).transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_inverse_frequencies(head_dim, theta, scaling):
    inv = [theta ** (-2.0 * i / head_dim) for i in range(head_dim // 2)]
    if not scaling:
        return inv
    factor, low, high, orig = (scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"],
                               scaling["original_max_position_embeddings"])
    out = []
    for f in inv:
        wavelen = 2 * math.pi / f
        if wavelen < orig / high:
            out.append(f)
        elif wavelen > orig / low:
            out.append(f / factor)
        else:
            s = (orig / wavelen - low) / (high - low)
            out.append((1 - s) * f / factor + s * f)
    return out


def rotate(x, cos, sin, heads, head_dim):
    batch, tokens, _ = x.shape
    x = x.view(batch, tokens, heads, head_dim)
    half = head_dim // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).reshape(batch, tokens, heads * head_dim)


class Llama(torch.nn.Module):
    def __init__(self, c, targets, rank, alpha):
        super().__init__()
        self.c = c
        d, hd = c["hidden_size"], c["hidden_size"] // c["num_attention_heads"]
        H, KV, inner = c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
        self.hd = hd
        self.embed_tokens = torch.nn.Parameter(torch.randn(c["vocab_size"], d) * 0.5, requires_grad=False)
        self.layers = torch.nn.ModuleList()
        for _ in range(c["num_hidden_layers"]):
            layer = torch.nn.Module()
            r = lambda name: rank if name in targets else 0
            layer.input_layernorm = torch.nn.Parameter(1 + 0.1 * torch.randn(d), requires_grad=False)
            layer.q_proj = LoRALinear(d, H * hd, False, r("q_proj"), alpha)
            layer.k_proj = LoRALinear(d, KV * hd, False, r("k_proj"), alpha)
            layer.v_proj = LoRALinear(d, KV * hd, False, r("v_proj"), alpha)
            layer.o_proj = LoRALinear(H * hd, d, False, r("o_proj"), alpha)
            layer.post_attention_layernorm = torch.nn.Parameter(1 + 0.1 * torch.randn(d), requires_grad=False)
            layer.gate_proj = LoRALinear(d, inner, False, r("gate_proj"), alpha)
            layer.up_proj = LoRALinear(d, inner, False, r("up_proj"), alpha)
            layer.down_proj = LoRALinear(inner, d, False, r("down_proj"), alpha)
            self.layers.append(layer)
        self.norm = torch.nn.Parameter(1 + 0.1 * torch.randn(d), requires_grad=False)
        self.lm_head = None if c["tie_word_embeddings"] else torch.nn.Parameter(torch.randn(c["vocab_size"], d) * 0.3,
                                                                               requires_grad=False)
        self.inv = rope_inverse_frequencies(hd, c["rope_theta"], c.get("rope_scaling"))

    def state(self):
        out = {"model.embed_tokens.weight": self.embed_tokens, "model.norm.weight": self.norm}
        for i, L in enumerate(self.layers):
            p = f"model.layers.{i}."
            out[p + "input_layernorm.weight"] = L.input_layernorm
            out[p + "post_attention_layernorm.weight"] = L.post_attention_layernorm
            for name in ["q_proj", "k_proj", "v_proj", "o_proj"]:
                out[p + "self_attn." + name + ".weight"] = getattr(L, name).weight
            for name in ["gate_proj", "up_proj", "down_proj"]:
                out[p + "mlp." + name + ".weight"] = getattr(L, name).weight
        if self.lm_head is not None:
            out["lm_head.weight"] = self.lm_head
        return out

    def adapters(self):
        for i, L in enumerate(self.layers):
            for name in ["q_proj", "k_proj", "v_proj", "o_proj"]:
                if getattr(L, name).rank:
                    yield f"model.layers.{i}.self_attn.{name}", getattr(L, name)
            for name in ["gate_proj", "up_proj", "down_proj"]:
                if getattr(L, name).rank:
                    yield f"model.layers.{i}.mlp.{name}", getattr(L, name)

    def forward(self, ids, pad_id):
        c = self.c
        positions, mask = layout(ids, pad_id)
        angles = positions.double()[:, :, None] * torch.tensor(self.inv, dtype=torch.float64)
        cos, sin = torch.cos(angles).float(), torch.sin(angles).float()
        H, KV, eps = c["num_attention_heads"], c["num_key_value_heads"], c["rms_norm_eps"]
        x = self.embed_tokens[ids]
        for L in self.layers:
            n = rms_norm(x, L.input_layernorm, eps)
            q = rotate(L.q_proj(n), cos, sin, H, self.hd)
            k = rotate(L.k_proj(n), cos, sin, KV, self.hd)
            h = x + L.o_proj(attention(q, k, L.v_proj(n), mask, H, KV, self.hd))
            n = rms_norm(h, L.post_attention_layernorm, eps)
            x = h + L.down_proj(torch.nn.functional.silu(L.gate_proj(n)) * L.up_proj(n))
        x = rms_norm(x, self.norm, eps)
        head = self.embed_tokens if self.lm_head is None else self.lm_head
        return (x @ head.t()).reshape(-1, c["vocab_size"])


def gelu_new(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


class GPT2(torch.nn.Module):
    def __init__(self, c, targets, rank, alpha):
        super().__init__()
        self.c = c
        d, inner = c["n_embd"], c["n_inner"] or 4 * c["n_embd"]
        self.wte = torch.nn.Parameter(torch.randn(c["vocab_size"], d) * 0.5, requires_grad=False)
        self.wpe = torch.nn.Parameter(torch.randn(c["n_positions"], d) * 0.3, requires_grad=False)
        self.h = torch.nn.ModuleList()
        r = lambda name: rank if name in targets else 0
        for _ in range(c["n_layer"]):
            L = torch.nn.Module()
            L.ln_1_w = torch.nn.Parameter(1 + 0.1 * torch.randn(d), requires_grad=False)
            L.ln_1_b = torch.nn.Parameter(0.1 * torch.randn(d), requires_grad=False)
            L.c_attn = LoRALinear(d, 3 * d, True, r("c_attn"), alpha, conv1d=True)
            L.attn_c_proj = LoRALinear(d, d, True, r("c_proj"), alpha, conv1d=True)
            L.ln_2_w = torch.nn.Parameter(1 + 0.1 * torch.randn(d), requires_grad=False)
            L.ln_2_b = torch.nn.Parameter(0.1 * torch.randn(d), requires_grad=False)
            L.c_fc = LoRALinear(d, inner, True, r("c_fc"), alpha, conv1d=True)
            L.mlp_c_proj = LoRALinear(inner, d, True, r("c_proj"), alpha, conv1d=True)
            self.h.append(L)
        self.ln_f_w = torch.nn.Parameter(1 + 0.1 * torch.randn(d), requires_grad=False)
        self.ln_f_b = torch.nn.Parameter(0.1 * torch.randn(d), requires_grad=False)

    def state(self):
        out = {"transformer.wte.weight": self.wte, "transformer.wpe.weight": self.wpe,
               "transformer.ln_f.weight": self.ln_f_w, "transformer.ln_f.bias": self.ln_f_b}
        for i, L in enumerate(self.h):
            p = f"transformer.h.{i}."
            out[p + "ln_1.weight"], out[p + "ln_1.bias"] = L.ln_1_w, L.ln_1_b
            out[p + "ln_2.weight"], out[p + "ln_2.bias"] = L.ln_2_w, L.ln_2_b
            for path, m in [("attn.c_attn", L.c_attn), ("attn.c_proj", L.attn_c_proj), ("mlp.c_fc", L.c_fc),
                            ("mlp.c_proj", L.mlp_c_proj)]:
                out[p + path + ".weight"], out[p + path + ".bias"] = m.weight, m.bias
        return out

    def adapters(self):
        for i, L in enumerate(self.h):
            for path, m in [("attn.c_attn", L.c_attn), ("attn.c_proj", L.attn_c_proj), ("mlp.c_fc", L.c_fc),
                            ("mlp.c_proj", L.mlp_c_proj)]:
                if m.rank:
                    yield f"transformer.h.{i}.{path}", m

    def forward(self, ids, pad_id):
        c = self.c
        d, heads = c["n_embd"], c["n_head"]
        positions, mask = layout(ids, pad_id)
        x = self.wte[ids] + self.wpe[positions]
        ln = lambda x, w, b: torch.nn.functional.layer_norm(x, (d,), w, b, c["layer_norm_epsilon"])
        for L in self.h:
            q, k, v = L.c_attn(ln(x, L.ln_1_w, L.ln_1_b)).split(d, dim=-1)
            h = x + L.attn_c_proj(attention(q, k, v, mask, heads, heads, d // heads))
            x = h + L.mlp_c_proj(gelu_new(L.c_fc(ln(h, L.ln_2_w, L.ln_2_b))))
        x = ln(x, self.ln_f_w, self.ln_f_b)
        return (x @ self.wte.t()).reshape(-1, c["vocab_size"])


def next_token_loss(logits, ids, counted):
    """Position t predicts token t + 1 where token t + 1 counts (answer and EOS); mean over counted tokens."""
    batch, tokens = ids.shape
    labels = torch.full((batch, tokens), -100, dtype=torch.long)
    labels[:, :-1] = torch.where(counted[:, 1:] > 0, ids[:, 1:], torch.tensor(-100))
    return torch.nn.functional.cross_entropy(logits, labels.reshape(-1), ignore_index=-100)


def make(out_dir, name, model, config, targets, rank, alpha, fan_in_fan_out):
    folder = os.path.join(out_dir, name)
    os.makedirs(os.path.join(folder, "adapter"), exist_ok=True)
    write_json(os.path.join(folder, "config.json"), config)
    write_safetensors(os.path.join(folder, "model.safetensors"), model.state(), {"format": "pt"})
    adapters = dict(model.adapters())
    lora = {}
    for path, m in adapters.items():
        lora[f"base_model.model.{path}.lora_A.weight"] = m.lora_A
        lora[f"base_model.model.{path}.lora_B.weight"] = m.lora_B
    write_safetensors(os.path.join(folder, "adapter", "adapter_model.safetensors"), lora, {"format": "pt"})
    write_json(os.path.join(folder, "adapter", "adapter_config.json"), {
        "alpha_pattern": {}, "base_model_name_or_path": "", "bias": "none", "fan_in_fan_out": fan_in_fan_out,
        "inference_mode": True, "lora_alpha": alpha, "lora_dropout": 0.0, "peft_type": "LORA", "r": rank,
        "rank_pattern": {}, "target_modules": sorted(targets), "task_type": "CAUSAL_LM", "use_rslora": False})
    # a left-padded batch: pad 0, BOS 1, EOS 2; the answer is the last 4 tokens (3 + EOS)
    g = torch.Generator().manual_seed(5)
    batch, tokens, pads = 3, 10, [0, 3, 5]
    vocab = config["vocab_size"]
    ids = torch.randint(3, vocab, (batch, tokens), generator=g)
    counted = torch.zeros(batch, tokens)
    for b, p in enumerate(pads):
        ids[b, :p] = 0
        ids[b, p] = 1
        ids[b, -1] = 2
        counted[b, -4:] = 1
    golden = {"input_ids": ids.float(), "counted": counted}
    logits = model(ids, 0)
    loss = next_token_loss(logits, ids, counted)
    loss.backward()
    golden["logits"] = logits
    golden["loss"] = loss.reshape(1)
    for path, m in adapters.items():
        golden[f"base_model.model.{path}.lora_A.weight.grad"] = m.lora_A.grad.clone()
        golden[f"base_model.model.{path}.lora_B.weight.grad"] = m.lora_B.grad.clone()
    params = [p for m in adapters.values() for p in (m.lora_A, m.lora_B)]
    optimiser = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(10):
        optimiser.zero_grad()
        loss = next_token_loss(model(ids, 0), ids, counted)
        losses.append(float(loss))
        loss.backward()
        optimiser.step()
    golden["losses"] = torch.tensor(losses)
    write_safetensors(os.path.join(folder, "golden.safetensors"),
                      {k: v.detach() for k, v in golden.items()}, {"torch": torch.__version__})
    print(f"{name}: loss {losses[0]:.6f} -> {losses[-1]:.6f}, {sum(v.numel() for v in model.state().values())} weights")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    torch.manual_seed(0)
    llama_gqa = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32,
                 "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                 "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
                 "torch_dtype": "float32"}
    targets = ["q_proj", "v_proj"]
    make(out_dir, "llama_gqa_untied", Llama(llama_gqa, targets, 4, 8.0), llama_gqa, targets, 4, 8.0, False)
    llama_tied = dict(llama_gqa, num_key_value_heads=4, tie_word_embeddings=True, rope_scaling=None,
                      rope_theta=500.0, eos_token_id=[2, 3])
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    make(out_dir, "llama_tied_all_modules", Llama(llama_tied, targets, 2, 4.0), llama_tied, targets, 2, 4.0, False)
    gpt2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 64, "n_positions": 32,
            "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": None, "layer_norm_epsilon": 1e-5,
            "activation_function": "gelu_new", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
    targets = ["c_attn", "c_proj"]
    make(out_dir, "gpt2", GPT2(gpt2, targets, 4, 8.0), gpt2, targets, 4, 8.0, True)


if __name__ == "__main__":
    main()

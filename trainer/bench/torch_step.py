#!/usr/bin/env python3
"""PyTorch baseline for `sluice bench train`: the same model, batch and training step.

Usage: python3 trainer/bench/torch_step.py DIR [--threads N]

DIR is the folder `sluice bench train --dir DIR` prepared: config.json, train.toml, the random
shards and init/ (the initial weights in the HF layout). The model is transformers'
LlamaForCausalLM with eager attention (what sluice computes: no fused kernels), trained with
torch.optim.AdamW (weight decay 0.1 on matrices only), gradient clipping at 1.0, f32 on CPU.

It also checks correctness: the loss of the first batch under the initial weights must equal
sluice's step-1 loss (out/metrics.jsonl) to within 1e-4.
"""
import argparse
import json
import pathlib
import struct
import time
import tomllib

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def read_shard(path):
    """Sequences of a sluice native shard (format version 1)."""
    raw = path.read_bytes()
    assert raw[:8] == b"SLUISHRD", "not a sluice shard"
    _version, width = struct.unpack_from("<II", raw, 8)
    samples, sequences, tokens, tok_at, _mask_at, samp_at, seq_at = struct.unpack_from("<7Q", raw, 16)
    dtype = np.uint16 if width == 2 else np.uint32
    toks = np.frombuffer(raw, dtype=dtype, count=tokens, offset=tok_at).astype(np.int64)
    sstart = np.frombuffer(raw, dtype=np.uint64, count=samples + 1, offset=samp_at)
    qstart = np.frombuffer(raw, dtype=np.uint64, count=sequences + 1, offset=seq_at)
    out = []
    for i in range(sequences):
        a, b = int(sstart[int(qstart[i])]), int(sstart[int(qstart[i + 1])])
        out.append(toks[a:b])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    d = args.dir
    cfg = tomllib.loads((d / "train.toml").read_text())
    # One optimizer step's sequences: micro-batches times their size (`--accum-threads`).
    batch = cfg["data"]["batch_size"] * cfg["data"].get("grad_accum", 1)
    seq_len = cfg["data"]["seq_len"]
    steps = cfg["train"]["steps"]
    seqs = read_shard(d / "shards" / "train-00000.bin")
    model = LlamaForCausalLM.from_pretrained(d / "init", torch_dtype=torch.float32,
                                             attn_implementation="eager")
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=float(cfg["optim"]["lr"]), betas=(0.9, 0.95), eps=1e-8)

    def batch_at(step):
        rows = [torch.from_numpy(s[:seq_len].copy()) for s in seqs[step * batch:(step + 1) * batch]]
        return torch.stack(rows)

    metrics = [json.loads(l) for l in (d / "out" / "metrics.jsonl").read_text().splitlines()]
    sluice_first = next(m["loss"] for m in metrics if m.get("step") == 1)
    with torch.no_grad():
        ids = batch_at(0)
        first = model(input_ids=ids, labels=ids).loss.item()
    print(f"first-batch loss: PyTorch {first:.6f}, sluice {sluice_first:.6f}, "
          f"difference {abs(first - sluice_first):.2e}")
    assert abs(first - sluice_first) < 1e-4, "the two implementations disagree"

    def step(i):
        ids = batch_at(i)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    warmup = 2
    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(warmup, steps):
        step(i)
    secs = time.perf_counter() - t0
    timed = steps - warmup
    tokens = timed * batch * (seq_len - 1)
    params = sum(p.numel() for p in model.parameters())
    print(f"PyTorch {torch.__version__} (CPU, f32, {torch.get_num_threads()} threads): "
          f"{params / 1e6:.1f}M parameters, batch {batch} x {seq_len} tokens: "
          f"{tokens / secs:.0f} tokens/s, {secs * 1e3 / timed:.0f} ms/step")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Reference CPU throughput of an HF BertForPreTraining training step (eager, fp32), for docs/performance.md.

The MLM head runs only at the masked positions (gathered) and the NSP head on the pooled output, as in the
OneFlow model that utils/benchmark.py times; same configs, batch, sequence length and optimizer.
Not part of the project's environment: run it in a separate venv with torch and transformers, e.g.

    python3.11 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch transformers
    /tmp/torchref/bin/python examples/pytorch_reference/bench_torch.py --config base --steps 5 --json base.json
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import BertConfig, BertForPreTraining

CONFIGS = {
    "small": dict(layers=4, hidden=256, heads=4, inter=1024, batch=32),
    "base": dict(layers=12, hidden=768, heads=12, inter=3072, batch=8),
}
SEQ = 128
N_MASK = 20
VOCAB = 30522
THREADS = 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None, help="write result JSON here")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default=None,
                    help="HF attention implementation (default: HF default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(THREADS)
    torch.manual_seed(args.seed)
    c = CONFIGS[args.config]
    B = c["batch"]

    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=c["hidden"],
        num_hidden_layers=c["layers"],
        num_attention_heads=c["heads"],
        intermediate_size=c["inter"],
        max_position_embeddings=512,
        type_vocab_size=2,
        # dropout left at HF default (0.1 hidden and attention probs)
    )
    kw = {"attn_implementation": args.attn} if args.attn else {}
    model = BertForPreTraining._from_config(cfg, **kw) if kw else BertForPreTraining(cfg)
    model.train()
    attn_impl = getattr(model.config, "_attn_implementation", None)

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if (p.ndim < 2 or "LayerNorm" in n or n.endswith("bias")) else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4,
    )

    # Fixed random batch (seeded).
    g = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, VOCAB, (B, SEQ), generator=g)
    attention_mask = torch.ones(B, SEQ, dtype=torch.long)
    token_type_ids = torch.zeros(B, SEQ, dtype=torch.long)
    token_type_ids[:, SEQ // 2:] = 1
    # 20 distinct masked positions per sequence (sorted), excluding position 0 ([CLS]).
    mlm_pos = torch.stack(
        [torch.randperm(SEQ - 1, generator=g)[:N_MASK].sort().values + 1 for _ in range(B)]
    )  # [B, 20]
    mlm_labels = torch.randint(0, VOCAB, (B, N_MASK), generator=g)
    nsp_labels = torch.randint(0, 2, (B,), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids)
        seq_out, pooled = out[0], out[1]
        idx = mlm_pos.unsqueeze(-1).expand(-1, -1, seq_out.size(-1))
        masked = torch.gather(seq_out, 1, idx)                       # [B, 20, H]
        mlm_logits = model.cls.predictions(masked)                  # [B, 20, V]
        nsp_logits = model.cls.seq_relationship(pooled)             # [B, 2]
        loss = (F.cross_entropy(mlm_logits.reshape(-1, VOCAB), mlm_labels.reshape(-1))
                + F.cross_entropy(nsp_logits, nsp_labels))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(2):  # warm-up
        step()
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step())  # .item() syncs; CPU anyway
        times.append(time.perf_counter() - t0)

    med = statistics.median(times)
    tps = B * SEQ / med
    res = {
        "config": args.config,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "sec_per_step_median": med,
        "tokens_per_s": tps,
        "steps": args.steps,
        "transformers_version": transformers.__version__,
        "attn_implementation": attn_impl,
        "batch": B,
        "seq": SEQ,
        "step_times": times,
        "last_loss": losses[-1],
    }
    print(f"[{args.config}] torch {torch.__version__} threads={res['threads']} attn={attn_impl} "
          f"batch={B} seq={SEQ}: median {med:.4f} s/step, {tps:.1f} tokens/s over {args.steps} steps "
          f"(loss {losses[-1]:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()

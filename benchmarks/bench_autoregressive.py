"""Speed of the autoregressive Transformer: KV-cached against recomputing decoding, and zoo
against x-transformers at the same size (dim 128, depth 4, heads 4, 784 tokens).

Every comparison is interleaved (A B A B ...) and reported as the median of the pair
ratios with both absolute medians beside it, because one timing on a shared machine
drifts while the ratio of alternating runs holds.

    python benchmarks/bench_autoregressive.py                # everything, ~5 min on 2 cores
    python benchmarks/bench_autoregressive.py --only cache   # one comparison

Comparisons:
  cache    zoo sampling with the KV cache vs ``use_cache=False``. The recomputing decoder
           costs a forward of length t at step t, so its full 784-step generation is
           estimated from ``--probe`` token steps at evenly spaced positions (stratified:
           mean step cost x 784); the cached decoder runs the full generation.
  cache1   the same at batch 1, both decoders generating the whole image (no estimate).
  sample   zoo vs x-transformers (AutoregressiveWrapper.generate, cache_kv=True): full
           784-token generation of a batch, plain sampling at temperature 1 on both.
  train    zoo vs x-transformers: forward + backward of the cross-entropy on a batch.
  bf16     zoo forward + backward, fp32 vs bf16 autocast (a CPU lever; off by default).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

import zoo
from zoo.models.autoregressive import ARTransformer, _TokenPicker

SIDE = 28
TOKENS = SIDE * SIDE


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(
    a: Callable[[], float], b: Callable[[], float], pairs: int,
    warmup: Callable[[], object] | None = None,
) -> dict:
    """Run a, b alternately ``pairs`` times after a warm-up (default: one run of each);
    returns both medians and the median of the pair ratios b/a."""
    if warmup is None:
        a(), b()
    else:
        warmup()
    ta, tb = [], []
    for _ in range(pairs):
        ta.append(a())
        tb.append(b())
    return {
        "a_median_s": statistics.median(ta),
        "b_median_s": statistics.median(tb),
        "ratio_b_over_a": statistics.median(y / x for x, y in zip(ta, tb, strict=True)),
        "a_s": ta,
        "b_s": tb,
    }


def zoo_model() -> ARTransformer:
    torch.manual_seed(0)
    return zoo.create("ar-transformer", dataset="mnist").eval()


def xt_models():
    """x-transformers at zoo's default size: 256 values + a start token, 785 positions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from x_transformers import Decoder, TransformerWrapper
        from x_transformers.autoregressive_wrapper import AutoregressiveWrapper

    torch.manual_seed(0)
    net = TransformerWrapper(
        num_tokens=257, max_seq_len=TOKENS + 1,
        # 32 dimensions per head as zoo's (128 / 4): x-transformers' default of 64 would make
        # its attention twice as wide (1.22M parameters against zoo's 0.96M)
        attn_layers=Decoder(dim=128, depth=4, heads=4, attn_dim_head=32, attn_flash=True),
    )
    return net, AutoregressiveWrapper(net).eval()


def uncached_probe(model: ARTransformer, batch: int, probes: int) -> Callable[[], float]:
    """Seconds of a full recomputing generation, estimated from ``probes`` stratified steps.

    Each probe is exactly one step of ``use_cache=False`` decoding at position t: a forward
    over the t tokens so far, the last logits, and a draw.
    """
    positions = [int((i + 0.5) * TOKENS / probes) for i in range(probes)]
    tokens = torch.randint(0, 256, (batch, TOKENS))
    pick = _TokenPicker(batch, 1.0, None, torch.Generator().manual_seed(0), model.device)

    @torch.no_grad()
    def run() -> float:
        total = 0.0
        for t in positions:
            start = time.perf_counter()
            logits = model.head(model.hidden(model._shifted(tokens[:, :t]))[:, -1])
            tokens[:, t] = pick(logits)
            total += time.perf_counter() - start
        return total / probes * TOKENS

    return run


def bench_cache(pairs: int, batch: int, probes: int) -> dict:
    m = zoo_model()
    g = torch.Generator()
    cached = lambda: timed(lambda: m.sample(batch, generator=g.manual_seed(0)))  # noqa: E731
    r = interleaved(cached, uncached_probe(m, batch, probes), pairs)
    r.update(what=f"sample {batch} images 28x28: KV cache (a) vs recompute (b, estimated "
                  f"from {probes} stratified steps)", batch=batch, probes=probes)
    return r


def bench_cache_full(pairs: int) -> dict:
    m = zoo_model()
    g = torch.Generator()

    def run(cache: bool) -> Callable[[], float]:
        return lambda: timed(lambda: m.sample(1, use_cache=cache, generator=g.manual_seed(0)))

    r = interleaved(run(True), run(False), pairs)
    r.update(what="sample 1 image 28x28, full generation: KV cache (a) vs recompute (b)",
             batch=1)
    return r


def bench_sample(pairs: int, batch: int) -> dict:
    m = zoo_model()
    _, xt = xt_models()
    g = torch.Generator()
    start = torch.full((batch, 1), 256, dtype=torch.long)

    def xt_run() -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            return timed(lambda: xt.generate(
                start, TOKENS, temperature=1.0, filter_logits_fn=lambda x: x, cache_kv=True
            ))

    def warmup() -> None:
        m.sample(1)
        with torch.no_grad():
            xt.generate(start, 16, temperature=1.0, filter_logits_fn=lambda x: x, cache_kv=True)

    zoo_run = lambda: timed(lambda: m.sample(batch, generator=g.manual_seed(0)))  # noqa: E731
    r = interleaved(zoo_run, xt_run, pairs, warmup)
    r.update(what=f"generate {batch} x {TOKENS} tokens with KV cache: zoo (a) vs "
                  "x-transformers (b)", batch=batch)
    for k in ("a", "b"):
        r[f"{k}_ms_per_token_step"] = r[f"{k}_median_s"] / TOKENS * 1e3
        r[f"{k}_images_per_s"] = batch / r[f"{k}_median_s"]
    return r


def bench_train(pairs: int, batch: int) -> dict:
    m = zoo_model().train()
    xt_net, _ = xt_models()
    xt_net.train()
    x = torch.randint(0, 256, (batch, 1, SIDE, SIDE), dtype=torch.uint8)
    tokens = m.to_tokens(x)
    inp = m._shifted(tokens[:, :-1])

    def zoo_step() -> float:
        def f():
            logits = m.head(m.hidden(inp))
            F.cross_entropy(logits.reshape(-1, 256), tokens.reshape(-1)).backward()
        return timed(f)

    def xt_step() -> float:
        def f():
            logits = xt_net(inp)
            F.cross_entropy(logits.reshape(-1, 257), tokens.reshape(-1)).backward()
        return timed(f)

    r = interleaved(zoo_step, xt_step, pairs)
    flops = train_flops(m) * batch
    r.update(what=f"forward+backward, batch {batch} x {TOKENS} tokens: zoo (a) vs "
                  "x-transformers (b)", batch=batch,
             zoo_params=m.num_parameters(),
             xt_params=sum(p.numel() for p in xt_net.parameters()),
             zoo_gflop_per_step=flops / 1e9,
             zoo_gflop_per_s=flops / 1e9 / r["a_median_s"])
    return r


def bench_bf16(pairs: int, batch: int) -> dict:
    m = zoo_model().train()
    x = torch.randint(0, 256, (batch, 1, SIDE, SIDE), dtype=torch.uint8)
    tokens = m.to_tokens(x)
    inp = m._shifted(tokens[:, :-1])

    def step(bf16: bool) -> Callable[[], float]:
        def f():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = m.head(m.hidden(inp))
            F.cross_entropy(logits.float().reshape(-1, 256), tokens.reshape(-1)).backward()
        return lambda: timed(f)

    r = interleaved(step(False), step(True), pairs)
    r.update(what=f"zoo forward+backward, batch {batch}: fp32 (a) vs bf16 autocast (b)",
             batch=batch)
    return r


def train_flops(m: ARTransformer) -> float:
    """Forward+backward FLOPs per image: 6 x matmul params x tokens, plus causal attention
    (QK^T and AV over half the L x L square, x3 for the backward)."""
    cfg = m.config
    matmul_params = sum(
        p.numel() for n, p in m.named_parameters() if p.dim() == 2 and "emb" not in n
    )
    attention = cfg.depth * 2 * 2 * (TOKENS * TOKENS / 2) * cfg.dim
    return 6 * matmul_params * TOKENS + 3 * attention


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=["cache", "cache1", "sample", "train"],
                   choices=["cache", "cache1", "sample", "train", "bf16"])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--probes", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    env = {"device": "cpu", "cpu": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": platform.python_version()}
    try:
        from importlib.metadata import version

        import x_transformers  # noqa: F401
        env["x_transformers"] = version("x-transformers")
    except ImportError:
        if {"sample", "train"} & set(a.only):
            print("x-transformers is not installed: pip install x-transformers", file=sys.stderr)
            return 2
    print(json.dumps(env))
    runs = {
        "cache": lambda: bench_cache(a.pairs, a.batch, a.probes),
        "cache1": lambda: bench_cache_full(a.pairs),
        "sample": lambda: bench_sample(a.pairs, a.batch),
        "train": lambda: bench_train(a.pairs, a.batch),
        "bf16": lambda: bench_bf16(a.pairs, a.batch),
    }
    results = {"env": env}
    for name in a.only:
        r = runs[name]()
        results[name] = r
        a_s, b_s = r["a_median_s"], r["b_median_s"]
        print(f"[{name}] {r['what']}\n    a {a_s:.3f} s, b {b_s:.3f} s (medians of {a.pairs}); "
              f"b/a = {r['ratio_b_over_a']:.2f} (median of pair ratios)")
        extra = {k: round(v, 3) for k, v in r.items()
                 if k.endswith(("per_token_step", "images_per_s", "gflop_per_s", "params"))}
        if extra:
            print(f"    {extra}")
        sys.stdout.flush()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

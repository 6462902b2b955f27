"""The per-process side of tests/test_distributed.py, run by torchrun (``python -m
torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py MODE OUT``) or, with the
same arguments and no torchrun, as one process.

Everything a test compares is written by rank 0 under OUT; the settings of each case live
in ``CASES`` so the test builds the single-process twin from the same numbers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import zoo
from zoo import data
from zoo import distributed as zdist
from zoo.core import TrainingDiverged
from zoo.train import Trainer

#: name -> (registered model, model options): tiny members of every family on 8x8 images
CASES = {
    "vae": ("vae-mlp", {"hidden": 32, "latent_dim": 4}),
    "gan-ns": ("gan-mlp", {"g_hidden": (32,), "d_hidden": (32,), "latent_dim": 8}),
    "gan-wgan-gp": ("gan-mlp", {"g_hidden": (32,), "d_hidden": (32,), "latent_dim": 8,
                                "loss": "wgan-gp", "n_critic": 2}),
    "ar": ("ar-transformer", {"dim": 16, "depth": 1, "heads": 2, "warmup_steps": 2}),
    "ddpm": ("ddpm", {"channels": 8, "channel_mult": (1, 2), "attention_levels": (),
                      "mid_attention": False, "timesteps": 50}),
    # class-conditional: labels sharded with the images, label dropout from the batch noise
    "ddpm-cond": ("ddpm", {"channels": 8, "channel_mult": (1, 2), "attention_levels": (),
                           "mid_attention": False, "timesteps": 50, "conditional": True,
                           "num_classes": 10, "label_dropout": 0.5}),
}
SHAPE = (1, 8, 8)
STEPS = 4
TRAIN = {"batch_size": 8, "log_every": 1, "checkpoint_every": 2, "ema_decay": 0.9,
         "grad_clip": 0.5, "device": "cpu", "seed": 3}
EVAL_N, EVAL_BATCH, EVAL_REFERENCE = 60, 16, 200


def small_images(n: int = 256) -> torch.Tensor:
    """The first n MNIST training images, 8x8 (every third pixel of the centre)."""
    x, _ = data.load("mnist", "train")
    return x[:n, :, 2:26:3, 2:26:3].contiguous()


def small_labels(n: int = 256) -> torch.Tensor:
    """The labels of ``small_images``."""
    return data.load("mnist", "train")[1][:n]


def make_model(case: str) -> zoo.GenerativeModel:
    name, options = CASES[case]
    torch.manual_seed(0)
    return zoo.create(name, image_shape=SHAPE, **options)


def train(case: str, out: Path, steps: int = STEPS, **options) -> Trainer:
    trainer = Trainer(make_model(case), "mnist", out, images=small_images(),
                      labels=small_labels(), progress=False, steps=steps,
                      **{**TRAIN, **options})
    trainer.fit()
    return trainer


def resume(out: Path, steps: int = STEPS) -> Trainer:
    trainer = Trainer.resume(out, images=small_images(), labels=small_labels(),
                             progress=False, steps=steps)
    trainer.fit()
    return trainer


def eval_model() -> zoo.GenerativeModel:
    """An untrained 28x28 MLP GAN: sampling costs nothing, its FID is a real number."""
    torch.manual_seed(1)
    return zoo.create("gan-mlp", dataset="mnist", g_hidden=(32,), d_hidden=(32,), latent_dim=8)


def sharded_eval(out: Path) -> None:
    from zoo import metrics

    model = eval_model()
    samples = metrics.draw_samples(model, EVAL_N, EVAL_BATCH, seed=5)
    result = metrics.evaluate(model, "mnist", extractor="mnist-classifier", n=EVAL_N,
                              metrics=("fid", "kid"), batch_size=EVAL_BATCH, seed=5,
                              n_reference=EVAL_REFERENCE, cache=False, device="cpu")
    # every rank returns the whole result; rank 1 writes its copy beside rank 0's
    torch.save(samples, out / f"samples-rank{zdist.rank()}.pt")
    (out / f"eval-rank{zdist.rank()}.json").write_text(json.dumps(result))


def stream(out: Path) -> Trainer:
    """Two steps of the 28x28 GAN with a streaming FID after the second."""
    x, _ = data.load("mnist", "train")
    trainer = Trainer(eval_model(), "mnist", out, images=x[:256], progress=False, steps=2,
                      **{**TRAIN, "eval_every": 2, "eval_n": EVAL_N,
                         "eval_extractor": "mnist-classifier"})
    trainer.fit()
    return trainer


def main() -> int:
    mode, out = sys.argv[1], Path(sys.argv[2])
    with zdist.launched():
        if mode == "train":  # every case, then one resumed under DDP
            for case in CASES:
                trainer = train(case, out / case)
                torch.save(trainer.model.state_dict(), out / case / f"rank{zdist.rank()}.pt")
            for case in ("ddpm", "gan-wgan-gp"):
                train(case, out / f"{case}-resumed", steps=STEPS // 2)
                resume(out / f"{case}-resumed")
            train("vae", out / "vae-half", steps=STEPS // 2)  # resumed by one process
        elif mode == "eval":  # sharded evaluate(), then streaming FID during training
            sharded_eval(out)
            stream(out / "stream")
        elif mode in ("fail", "hang", "nan"):
            def hook(trainer):
                if trainer.step == 2 and zdist.rank() == 1:
                    if mode == "fail":
                        raise RuntimeError("rank 1 fails on purpose")
                    if mode == "nan":  # a NaN weight on rank 1 only: its next loss is NaN
                        with torch.no_grad():
                            trainer.model.decoder[0].weight[0, 0] = float("nan")
                    else:
                        time.sleep(300)  # alive but silent: rank 0 must time out

            trainer = Trainer(make_model("vae"), "mnist", out / mode, images=small_images(),
                              progress=False, steps=50, **TRAIN)
            trainer.hook = hook
            try:
                trainer.fit()
            except TrainingDiverged as e:
                print(f"rank {zdist.rank()} stopped: {e}", flush=True)
                return 3
        else:
            raise SystemExit(f"unknown mode {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One evaluation of a tournament's run: samples drawn with the shared seed, KID and FID with
their replicates (``scores``), and for a finalist the rest of a bench row: precision,
recall, density and coverage with intervals, class accuracy for a conditional model, NLL
and sampling speed."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .. import data as zdata
from .. import metrics
from ..bench import timing
from ..bench.runner import draw
from ..images import legible_scale, save_grid
from ..metrics.intervals import kid_reference_term
from ..runs import load_run
from .scores import score

#: the seed every evaluation draws its samples with (common random numbers)
SAMPLE_SEED = 1234
#: images of the test split whose NLL a finalist reports
NLL_IMAGES = 100
#: batch size of the timed sampling (images/s)
SPEED_BATCH = 64
GRID = 64
#: reference images behind precision, recall, density and coverage (the first of the
#: split): their k-NN radii cost M^2, and 2000 keep them within a few seconds on a CPU
REFERENCE_PR = 2000


class Reference:
    """The reference split's features under the tournament's extractor, extracted once."""

    def __init__(self, dataset, spec, device, root=None):
        self.dataset, self.spec, self.device, self.root = dataset, spec, device, root
        #: resolved as ``evaluate`` resolves ``spec`` (None: the dataset's default, announced)
        self.extractor = metrics.features.resolve_extractor(spec, dataset)
        layer = metrics.fidelity.feature_layer(self.extractor, "kid")
        self.features = metrics.fidelity.reference_features(
            dataset, "test", self.extractor, [layer], device=device, root=root)[layer].double()
        self.k_yy = kid_reference_term(self.features)


def evaluate_run(run_dir: Path, ref: Reference, n: int, grid: Path | None = None,
                 final: bool = False, nll_options: dict | None = None) -> dict:
    """KID/FID with replicates of ``n`` samples of the run's EMA model; ``final``: also the
    bench figures (``final_figures``)."""
    model = load_run(run_dir, map_location=ref.device).eval()
    samples, labels = draw(model, n, 500, SAMPLE_SEED, {})
    if grid is not None:
        shown = samples[:GRID]
        save_grid(shown, grid, scale=legible_scale(*shown.shape[2:], len(shown)))
    fake = metrics.fidelity.features(samples, ref.extractor, "kid", device=ref.device)
    scored = score(fake, ref.features, k_yy=ref.k_yy)
    out = {name: {"value": s.value, "draws": s.draws, "ci95": s.interval()}
           for name, s in scored.items()}
    out["n"] = n
    if final:
        out.update(final_figures(model, samples, labels, ref, nll_options))
    return out


def final_figures(model, samples, labels, ref: Reference, nll_options: dict | None) -> dict:
    """Precision, recall, density, coverage (and class accuracy) with intervals; with
    ``nll_options`` (not None) also the NLL on ``NLL_IMAGES`` test images and images/s at
    ``SPEED_BATCH``."""
    names = ["pr", "dc"] + (["class_accuracy"] if labels is not None else [])
    n_ref = min(ref.features.shape[0], max(REFERENCE_PR, samples.shape[0]))
    row = metrics.evaluate(samples, ref.dataset, "test", ref.spec, metrics=names,
                           seed=SAMPLE_SEED, device=ref.device, root=ref.root,
                           announce=False, labels=labels, n_reference=n_ref)
    keep = ("precision", "recall", "density", "coverage", "class_accuracy")
    out = {k: row[k] for k in keep if row.get(k) is not None}
    out.update({f"{k}_ci95": row[f"{k}_ci95"] for k in keep if row.get(f"{k}_ci95")})
    if nll_options is None:
        return out
    out.update(nll(model, ref, nll_options))
    speed = timing.sampling_speed(model, [SPEED_BATCH], repeats=2, warmup=1, seed=0)
    ips = speed["sample_images_per_s"]  # keyed by the batch size, as a string in rows
    out["sample_images_per_s"] = ips.get(SPEED_BATCH, ips.get(str(SPEED_BATCH)))
    return out


def nll(model, ref: Reference, options: dict) -> dict:
    """Bits/dim on the first ``NLL_IMAGES`` test images: mean, standard error and kind
    (exact or bound); nothing for a model without a likelihood."""
    if model.likelihood is None:
        return {}
    images, _ = zdata.load(ref.dataset, "test", root=ref.root)
    images = images[:NLL_IMAGES]
    torch.manual_seed(SAMPLE_SEED)
    with torch.no_grad():
        values = torch.cat([model.nll(images[i:i + 100], **options).double().cpu()
                            for i in range(0, images.shape[0], 100)])
    return {"nll_bpd": values.mean().item(),
            "nll_stderr": values.std().item() / math.sqrt(values.numel()),
            "nll_kind": model.likelihood, "nll_detail": model.describe_nll(**options)}

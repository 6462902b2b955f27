"""What an autoencoder's compression costs: reconstruction figures of a model that
``reconstruct``s (the autoencoders, and the latent models through theirs).

>>> from zoo.metrics import reconstruction
>>> reconstruction.evaluate(model, "fashion-mnist", n=2000)
{"recon_n": 2000, "recon_psnr": 22.1, "recon_psnr_ci95": [21.9, 22.3], "recon_fid": ...}

PSNR is per image, 10 log10(255^2 / MSE) over its subpixels, averaged over the images, with
a 95% t interval over images. ``recon_fid`` is the FID of the reconstructions of the split
against the split itself with the dataset's extractor (``evaluate``; its bootstrap
interval), so an autoencoder whose reconstructions are perfect scores 0. A VQ-VAE adds its
codebook use over the split's codes: perplexity (exp of the entropy of the code
frequencies, at most the codebook size) and the codes never used.
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from .. import data as zdata
from ..core import ConfigError, GenerativeModel

#: the keys ``evaluate`` returns (the results schema's reconstruction columns)
KEYS = ("recon_n", "recon_psnr", "recon_psnr_ci95", "recon_fid", "recon_fid_ci95",
        "codebook_perplexity", "dead_codes", "codebook_size")


def reconstructs(model) -> bool:
    """Whether ``model`` has reconstruction figures (an autoencoder or a latent model)."""
    return callable(getattr(model, "reconstruct", None))


def psnr(x, y) -> torch.Tensor:
    """Per-image PSNR in dB of uint8 batches ``x`` and ``y`` (infinite where identical)."""
    mse = (x.double() - y.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(255.0 ** 2 / mse)


def mean_interval(values: torch.Tensor) -> tuple[float, list[float] | None]:
    """The mean of ``values`` and its 95% t interval (None for fewer than two)."""
    v = values.double()
    mean = float(v.mean())
    if v.numel() < 2:
        return mean, None
    half = float(stats.t.ppf(0.975, v.numel() - 1) * v.std() / math.sqrt(v.numel()))
    return mean, [mean - half, mean + half]


def evaluate(model: GenerativeModel, dataset, split: str = "test", extractor: str | None = None,
             n: int | None = None, *, batch_size: int = 256, root=None, bootstrap: int = 200,
             seed: int = 0, **fid_options) -> dict:
    """Reconstruction figures of the first ``n`` images of ``dataset``'s ``split`` (all
    when None): ``recon_psnr`` (with ``recon_psnr_ci95``), ``recon_fid`` (with its
    bootstrap interval, ``bootstrap`` resamples) and, for a VQ-VAE, ``codebook_perplexity``,
    ``dead_codes`` and ``codebook_size``. ``fid_options`` go to ``zoo.metrics.evaluate``."""
    from .fidelity import evaluate as fidelity_evaluate

    if not reconstructs(model):
        raise ConfigError(f"{model.name} does not reconstruct images: reconstruction figures "
                          "are for the autoencoders and the latent models")
    images, _ = zdata.load(dataset, split, root=root)
    if n is not None:
        if n < 2:
            raise ConfigError(f"reconstruction figures need at least 2 images, got n={n}")
        images = images[:n]
    recon = model.reconstruct(images, batch_size=batch_size).cpu()
    value, ci = mean_interval(psnr(images, recon).clamp(max=100.0))  # identical: 100 dB
    fid = fidelity_evaluate(recon, dataset, split, extractor, metrics="fid", root=root,
                            bootstrap=bootstrap, seed=seed, announce=False, **fid_options)
    out = {"recon_n": int(images.shape[0]), "recon_psnr": value, "recon_psnr_ci95": ci,
           "recon_fid": fid["fid"], "recon_fid_ci95": fid.get("fid_ci95"),
           "recon_extractor": fid["extractor"]}
    ae = getattr(model, "autoencoder", model)
    if callable(getattr(ae, "codebook_usage", None)):
        usage = ae.codebook_usage(images.to(ae.device), batch_size=batch_size)
        out.update(codebook_perplexity=usage["perplexity"], dead_codes=usage["dead_codes"],
                   codebook_size=usage["codes"])
    return out


def format_reconstruction(result: dict) -> str:
    """The reconstruction figures of a result, as lines under ``format_result``'s table."""
    if result.get("recon_psnr") is None:
        return ""

    def ci(key: str, fmt: str) -> str:
        lo_hi = result.get(f"{key}_ci95")
        return f" [{fmt.format(lo_hi[0])}, {fmt.format(lo_hi[1])}]" if lo_hi else ""

    lines = [f"reconstructions of {result['recon_n']} {result.get('split', 'test')} images:",
             f"  PSNR       {result['recon_psnr']:.2f} dB{ci('recon_psnr', '{:.2f}')}",
             f"  rFID       {result['recon_fid']:.4f}{ci('recon_fid', '{:.4f}')}"]
    if result.get("codebook_perplexity") is not None:
        lines.append(f"  codebook   perplexity {result['codebook_perplexity']:.1f} of "
                     f"{result['codebook_size']} codes, {result['dead_codes']} never used")
    return "\n".join(lines)

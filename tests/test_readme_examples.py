"""The README's worked examples of a sampler and a metric, run as written: nothing else in zoo
changes for them to work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import TINY_DDPM, tiny_ddpm

import zoo
from zoo.bench import schema
from zoo.models.diffusion import DDPM

ROOT = Path(__file__).resolve().parents[1]


def _readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no python block after <!-- {marker} -->"
    return m.group(1)


def test_the_readme_toy_sampler_works_as_a_sampler(monkeypatch, tmp_path):
    monkeypatch.setattr(DDPM, "samplers", DDPM.samplers)  # the example registers one more
    namespace: dict = {}
    exec(compile(_readme_block("example: sampler"), "README.md", "exec"), namespace)
    assert DDPM.samplers[-1].name == "oneshot"
    m = tiny_ddpm()
    a = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="oneshot")
    b = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="ddim", steps=1)
    assert torch.equal(a, b)  # one DDIM step from x_T is what the toy does
    # the harness takes it with no change: a suite variant, a row key, a label
    suite = tmp_path / "toy.toml"
    suite.write_text(
        'datasets = ["mnist"]\n[evaluation]\nn_samples = 8\n'
        '[[models]]\nname = "ddpm"\nconfig = { timesteps = 20, channels = 8 }\n'
        'budget = { steps = 1 }\nsamplers = [{ sampler = "oneshot" }, { sampler = "ddim" }]\n')
    from zoo.bench.suite import load_suite

    variants = load_suite(suite).models[0].variants
    assert [v.label for v in variants] == ["oneshot", "ddim, 20 steps, eta 0"]
    assert schema.sampler_label({"family": "diffusion", "sampler": "oneshot",
                                 "sampler_options": variants[0].canonical}) == "oneshot"


def test_the_readme_toy_sampler_reaches_latent_diffusion_unclipped(monkeypatch, tmp_path):
    monkeypatch.setattr(DDPM, "samplers", DDPM.samplers)
    exec(compile(_readme_block("example: sampler"), "README.md", "exec"), {})
    torch.manual_seed(0)
    zoo.create("kl-autoencoder", "mnist", channels=8).save(tmp_path / "ae.pt")
    m = zoo.create("latent-diffusion", "mnist", autoencoder=str(tmp_path / "ae.pt"),
                   **TINY_DDPM).eval()
    assert m.parse_sampler({"sampler": "oneshot"}).clip_x0 is False
    assert m.parse_sampler({"sampler": "oneshot", "clip_x0": "true"}).clip_x0 is True
    assert tiny_ddpm().parse_sampler({"sampler": "oneshot"}).clip_x0 is True
    a = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="oneshot")
    b = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="ddim", steps=1)
    c = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="ddim", steps=1,
                 clip_x0=True)
    assert torch.equal(a, b) and not torch.equal(a, c)  # unclipped, as ddim is here


def test_the_readme_toy_metric_reaches_the_schema(monkeypatch):
    from zoo.bench import figures, frame
    from zoo.metrics import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # restored after
    namespace: dict = {}
    exec(compile(_readme_block("example: metric"), "README.md", "exec"), namespace)
    assert registry.normalize_metrics("fid,spread") == ("fid", "spread")
    real = torch.randn(50, 8)
    assert registry.get("spread").compute(real, real.clone())["spread"] == pytest.approx(1.0)
    assert namespace["spread"](real, 2 * real)["spread"] == pytest.approx(2.0)
    assert "spread" in schema.columns() and schema.directions()["spread"] == 1
    assert "spread" in schema.deterministic()
    # a figure against speed and a panel of the compute curves, declared by default
    assert registry.column("spread") in figures.speed_figures()
    assert "spread" in frame.curve_columns()
    monkeypatch.undo()
    assert "spread" not in schema.columns()

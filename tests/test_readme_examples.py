"""The worked examples of a sampler and a metric (docs/design.md, "Worked examples"), run as
written: nothing else in zoo changes for them to work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import TINY_DDPM, doc_example, doc_files, tiny_ddpm

import zoo
from zoo.bench import schema
from zoo.models.diffusion import DDPM


def _example(name: str):
    """A worked example's code, compiled under the name of the file that holds it."""
    blocks, where = doc_example(name)
    return compile(blocks["python"], where, "exec")


def test_the_readme_toy_sampler_works_as_a_sampler(monkeypatch, tmp_path):
    monkeypatch.setattr(DDPM, "samplers", DDPM.samplers)  # the example registers one more
    namespace: dict = {}
    exec(_example("sampler"), namespace)
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
    exec(_example("sampler"), {})
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
    exec(_example("metric"), namespace)
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


# -- links -----------------------------------------------------------------------------------------

_CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lower case, punctuation dropped, spaces
    to hyphens, ``-1``, ``-2`` ... on repeats)."""
    seen: dict[str, int] = {}
    for m in re.finditer(r"^#+ +(.+?) *$", re.sub(r"^```.*?^```", "", path.read_text(),
                                                   flags=re.S | re.M), re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def broken_links(path: Path) -> list[str]:
    """The relative links of a Markdown file (outside code) whose file or heading is missing."""
    broken = []
    for target in _LINK.findall(_CODE.sub("``", path.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http, https, mailto
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists() or (anchor and dest.suffix == ".md"
                                 and anchor not in _anchors(dest)):
            broken.append(f"{path.name}: {target}")
    return broken


def test_every_relative_link_of_the_docs_resolves():
    assert [b for p in doc_files() for b in broken_links(p)] == []


def test_a_missing_file_or_heading_is_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## A `code` heading, again\n")
    page = tmp_path / "page.md"
    page.write_text("# Here\n[a](other.md#title) [b](other.md#a-code-heading-again) [c](#here)\n"
                    "[d](gone.md) [e](other.md#nowhere) [f](#there) [g](https://x.org/y)\n"
                    "`[h](in-code.md)`\n```\n[i](in-a-block.md)\n```\n")
    assert broken_links(page) == ["page.md: gone.md", "page.md: other.md#nowhere",
                                  "page.md: #there"]

"""The fast path, checked on the CPU: fused Adam in every family, channels_last and
torch.compile train (and sample) what the plain path does, and the Trainer reports the
first step (compilation) apart from the steady-state throughput.
"""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import capture_on_cpu

import zoo
from zoo import cli, data
from zoo.train import Trainer

SHAPE = (1, 8, 8)
#: tiny convolutional members of three families (8x8 images)
CONV = {
    "vae-conv": {"channels": (8, 16), "conv_hidden": 32, "latent_dim": 4},
    "gan-dcgan": {"channels": 8, "latent_dim": 8},
    "ddpm": {"channels": 8, "channel_mult": (1, 2), "attention_levels": (), "timesteps": 50},
}
TRAIN = {"batch_size": 16, "steps": 3, "ema_decay": 0.9, "device": "cpu", "seed": 2,
         "checkpoint_every": 10}


def small_images(n: int = 128) -> torch.Tensor:
    x, _ = data.load("mnist", "train")
    return x[:n, :, 2:26:3, 2:26:3].contiguous()


def _train(name: str, options: dict, out, **train) -> Trainer:
    torch.manual_seed(0)
    model = zoo.create(name, image_shape=SHAPE, **options)
    trainer = Trainer(model, "mnist", out, images=small_images(), progress=False,
                      **{**TRAIN, **train})
    trainer.summary = trainer.fit()
    return trainer


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a
               if a[k].is_floating_point())


def test_channels_last_is_chosen_for_convolutional_models_on_cuda_only():
    conv = zoo.create("ddpm", image_shape=SHAPE, **CONV["ddpm"])
    conv.place("cpu")
    assert all(p.is_contiguous() for p in conv.parameters())
    conv.place("cpu", channels_last=True)
    w4 = [p for p in conv.parameters() if p.dim() == 4]
    assert w4 and all(p.is_contiguous(memory_format=torch.channels_last) for p in w4)
    assert not all(p.is_contiguous() for p in w4)
    assert conv.convolutional and not zoo.create("vae-mlp", image_shape=SHAPE).convolutional


@pytest.mark.parametrize("name", list(CONV))
def test_channels_last_trains_and_samples_like_contiguous(name, tmp_path):
    plain = _train(name, CONV[name], tmp_path / "plain", channels_last=False)
    nhwc = _train(name, CONV[name], tmp_path / "nhwc", channels_last=True)
    w4 = [p for p in nhwc.model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert w4 and all(p.is_contiguous(memory_format=torch.channels_last) for p in w4)
    a = plain.model.state_dict()
    moved = _max_diff(a, zoo.create(name, image_shape=SHAPE, **CONV[name]).state_dict())
    assert moved > 1e-3, "the weights did not move: nothing to compare"
    assert _max_diff(a, nhwc.model.state_dict()) < 1e-5
    # the saved model samples the same images either way
    m1 = zoo.load_run(tmp_path / "plain").place("cpu", channels_last=False).eval()
    m2 = zoo.load_run(tmp_path / "plain").place("cpu", channels_last=True).eval()
    opts = {"sampler": "ddim", "steps": 5} if name == "ddpm" else {}
    s1 = m1.sample(8, generator=torch.Generator().manual_seed(0), **opts)
    s2 = m2.sample(8, generator=torch.Generator().manual_seed(0), **opts)
    assert (s1.int() - s2.int()).abs().max() <= 1  # a pixel may round the other way


@pytest.mark.slow
def test_compiled_training_matches_eager_and_reports_the_compile(tmp_path, capsys):
    """``zoo train --compile`` trains the weights the eager Trainer trains; the first step
    (compilation) is reported apart from the steady-state throughput."""
    # the CLI on full 28x28 MNIST is the user's path; the eager twin is built the same way
    opts = ["--set", "hidden=32", "--set", "latent_dim=4", "--set", "ema_decay=0.9"]
    rc = cli.main(["train", "vae-mlp", "--dataset", "mnist", "--steps", "4",
                   "--batch-size", "16", "--seed", "2", "--device", "cpu", "--compile",
                   "--out", str(tmp_path / "compiled"), *opts])
    assert rc == 0
    line = capsys.readouterr().out
    assert "images/s after the first step" in line and "compilation included" in line
    torch.manual_seed(TRAIN["seed"])
    eager = zoo.create("vae-mlp", dataset="mnist", hidden=32, latent_dim=4)
    trainer = Trainer(eager, "mnist", tmp_path / "eager", progress=False, batch_size=16,
                      steps=4, seed=2, device="cpu", ema_decay=0.9)
    summary = trainer.fit()
    assert summary["first_step_seconds"] > 0 and summary["steady_images_per_s"] > 0
    compiled = zoo.load_run(tmp_path / "compiled")
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # no _orig_mod. keys
    assert _max_diff(compiled.state_dict(), zoo.load_run(tmp_path / "eager").state_dict()) < 1e-5


def test_compile_compiles_each_network_and_is_undone_after_fit(tmp_path):
    """--compile really compiles (the GAN's networks are nn.Sequential, which
    Module.compile() left eager with torch 2.11 on CUDA) and fit() leaves the plain modules."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    trainer = _train("gan-dcgan", CONV["gan-dcgan"], tmp_path / "run", compile=True, steps=2)
    modules = trainer.model.ddp_modules()
    assert counters["stats"]["unique_graphs"] >= len(modules) == 2
    assert all("forward" not in m.__dict__ for m in modules.values())
    torch._dynamo.reset()


@pytest.mark.parametrize("first, then", [(True, False), (False, True)])
def test_resume_across_layouts_continues_exactly(first, then, tmp_path):
    """A run trained channels_last (CUDA) resumed plain (CPU), or the other way round,
    continues like an uninterrupted run: fused Adam reads parameters and moments as flat
    memory, so the moments must follow the parameters' layout."""
    name = "ddpm"
    whole = _train(name, CONV[name], tmp_path / "whole", steps=4, channels_last=then)
    _train(name, CONV[name], tmp_path / "split", steps=2, channels_last=first)
    resumed = Trainer.resume(tmp_path / "split", images=small_images(), progress=False,
                             steps=4, channels_last=then)
    resumed.fit()
    assert _max_diff(whole.model.state_dict(), resumed.model.state_dict()) < 1e-5


def test_a_failing_compile_is_a_clear_error(tmp_path, monkeypatch):
    """torch.compile failing (here: inductor raising, as it does without a C++ compiler)
    stops training with a ConfigError that says what to do, not a traceback from dynamo."""
    import torch._inductor.compile_fx as compile_fx

    from zoo.core import ConfigError

    def broken(*args, **kwargs):
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr(compile_fx, "compile_fx", broken)
    torch._dynamo.reset()
    with pytest.raises(ConfigError, match="torch.compile failed.*without --compile"):
        _train("vae-mlp", {"hidden": 16, "latent_dim": 2}, tmp_path / "run", compile=True)
    torch._dynamo.reset()


def test_place_returns_to_the_plain_layout():
    model = zoo.create("vae-conv", image_shape=SHAPE, **CONV["vae-conv"])
    model.place("cpu", channels_last=True).place("cpu", channels_last=False)
    assert all(p.is_contiguous() for p in model.parameters())


# -- graph-captured sampling loops ------------------------------------------------------------
TINY_AR = {"dim": 16, "depth": 2, "heads": 2}
TINY_DDPM = {**CONV["ddpm"], "timesteps": 6}
GRAPHED = [  # (model, config, sampler options), small enough for ops replayed from Python
    ("ar-transformer", TINY_AR, {"temperature": 1.0}),
    ("ar-transformer", TINY_AR, {"temperature": 0.0}),
    ("ar-transformer", TINY_AR, {"temperature": 0.8, "top_k": 5}),
    ("ddpm", TINY_DDPM, {"sampler": "ddim", "steps": 3, "eta": 1.0}),
    ("ddpm", TINY_DDPM, {"sampler": "ddpm"}),
]


@pytest.mark.parametrize("name,config,options", GRAPHED)
def test_graphed_sampling_loop_draws_what_the_eager_loop_draws(name, config, options,
                                                               monkeypatch):
    # the capture is CUDA's; what is checked here is everything around it, with a stand-in
    # that replays recorded ops: the static buffers and their lifetimes, the noise drawn
    # before the replay in the eager loop's order, no host sync in the loop, the reuse of a
    # captured loop for a second batch, a new capture when the weights' storage changes
    cls = zoo.registry.spec(name).cls
    captures = getattr(cls, "_denoise_graphed", cls.sample)  # the method that captures
    module = sys.modules[captures.__module__]
    monkeypatch.setattr(module, "capture", capture_on_cpu)
    monkeypatch.setattr(module, "graph_mode", lambda value, device: (value is True, False))
    torch.manual_seed(0)
    shape = (1, 4, 4) if name == "ar-transformer" else SHAPE  # 16 tokens
    model = zoo.create(name, image_shape=shape, **config).eval()

    def draw(graph, seed):
        return model.sample(3, generator=torch.Generator().manual_seed(seed), batch_size=3,
                            cuda_graph=graph, **options)

    for seed in (1, 2):  # the second replays the loop captured for the first
        assert torch.equal(draw(True, seed), draw(False, seed))
    assert len(model._loop_graphs.graphs) == 1
    with torch.no_grad():  # new values in the same storage: the replay reads them
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    assert torch.equal(draw(True, 3), draw(False, 3))
    assert len(model._loop_graphs.graphs) == 1
    for p in model.parameters():  # new storage (as after moving the model): a new capture,
        p.data = p.data.clone()  # and the old one dropped
    assert torch.equal(draw(True, 4), draw(False, 4))
    assert len(model._loop_graphs.graphs) == 1


def test_auto_graphs_capture_from_the_second_batch_of_a_kind():
    from zoo.nn.graphs import LoopGraphs

    g = LoopGraphs()
    assert not g.worth_it(("ddim", 64), auto=True)
    assert g.worth_it(("ddim", 64), auto=True)
    assert not g.worth_it(("ddim", 32), auto=True)
    assert g.worth_it(("ddim", 16), auto=False)


def test_captured_loops_are_kept_least_recently_used_and_per_weights():
    from zoo.nn import graphs

    g, built = graphs.LoopGraphs(), []

    def get(key, weights="w"):
        return g.get(key, weights, lambda: built.append(key) or (key,))

    for key in range(graphs.MAX_GRAPHS):
        get(key)
    get(0)  # a hit: built once, now the most recently used
    get("new")  # evicts 1, the least recently used
    assert built == [*range(graphs.MAX_GRAPHS), "new"]
    assert [k for k, _ in g.graphs] == [*range(2, graphs.MAX_GRAPHS), 0, "new"]
    get(0, weights="moved")  # other weights: every entry of the old ones goes
    assert list(g.graphs) == [(0, "moved")]


@pytest.mark.parametrize("name,config,options", GRAPHED[:1] + GRAPHED[3:4])
def test_cuda_graph_needs_cuda(name, config, options):
    model = zoo.create(name, image_shape=SHAPE, **config)
    with pytest.raises(zoo.ConfigError, match="CUDA device"):
        model.sample(1, cuda_graph=True, **options)
    with pytest.raises(zoo.ConfigError, match="true or false"):
        model.sample(1, cuda_graph="maybe", **options)


def test_gan_save_with_a_compiled_generator_estimates_the_saved_statistics(tmp_path):
    """GAN.save re-estimates BatchNorm statistics on a copy of the generator; with the
    Trainer's --compile the generator's forward is compiled and bound to the original, so
    the copy must drop it (else the copy's statistics stay reset and model.pt samples
    garbage, while the live generator's statistics move)."""
    torch.manual_seed(0)
    m = zoo.create("gan-dcgan", image_shape=SHAPE, **CONV["gan-dcgan"])
    live = {k: v.clone() for k, v in m.gen.named_buffers()}
    m.save(tmp_path / "plain.pt")
    m.gen.forward = torch.compile(m.gen.forward, backend="eager")  # what --compile attaches
    m.save(tmp_path / "compiled.pt")
    plain = torch.load(tmp_path / "plain.pt")["state_dict"]
    compiled = torch.load(tmp_path / "compiled.pt")["state_dict"]
    stats = [k for k in plain if "running_mean" in k]
    assert stats and all(plain[k].abs().sum() > 0 for k in stats)
    assert all(torch.equal(plain[k], compiled[k]) for k in stats)
    assert all(torch.equal(v, dict(m.gen.named_buffers())[k]) for k, v in live.items())

"""The class-conditional pixel Transformer: the class in the start token's
place, label dropout, and classifier-free guidance on the logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_float32_close, capture_on_cpu, class_accuracy_14, mnist_14

import zoo
import zoo.data
from zoo.core import Batch, ConfigError
from zoo.models.autoregressive import (
    DEFAULT_GUIDANCE,
    ARTransformer,
    ARTransformerConfig,
    Tokens,
)

DATA = Path(__file__).parent / "data" / "ar-uncond-2bb93dd"


def cond(image_shape=(1, 4, 5), num_classes=3, **overrides) -> ARTransformer:
    """A small conditional model whose class embedding is large, so the class matters."""
    torch.manual_seed(0)
    cfg = ARTransformerConfig(dim=32, depth=2, heads=4, conditional=True,
                              num_classes=num_classes, **overrides)
    m = ARTransformer(cfg, image_shape).eval()
    with torch.no_grad():
        m.class_emb.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
        m.class_mod_emb.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
        m.head.weight.mul_(5.0)
    return m


def gen(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_old_unconditional_checkpoint_loads_and_samples_bit_identically():
    """A checkpoint written by the code before conditioning (commit 2bb93dd, whose samples
    and NLL are stored beside it) loads and gives the same bytes."""
    m = zoo.load(DATA / "model.pt")
    expected = torch.load(DATA / "expected.pt")
    assert not m.conditional and m.num_classes is None
    assert not any("class" in k for k in m.state_dict())
    assert torch.equal(m.sample(4, generator=gen(1)), expected["samples"])
    assert torch.equal(m.sample(4, generator=gen(2), temperature=0.8, top_k=20, use_cache=False),
                       expected["samples_t08_k20"])
    assert_float32_close(m.nll(expected["x"]), expected["nll"])
    assert m.describe_nll() == "exact"


def test_the_class_reaches_every_layer_through_adaptive_layernorm():
    """Beside the class embedding at the input, every LayerNorm's output is shifted and
    scaled per class (zero at the start): with the input embedding equal for two classes,
    the class still changes the logits, through each block's modulation alone."""
    torch.manual_seed(0)
    m = ARTransformer(ARTransformerConfig(dim=16, depth=2, heads=2, conditional=True,
                                          num_classes=3), (1, 4, 4)).eval()
    assert torch.equal(m.class_mod_emb.weight, torch.zeros(4, (4 * 2 + 2) * 16))
    x = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    with torch.no_grad():
        m.class_emb.weight.zero_()
        y0, y1 = torch.tensor([0, 0]), torch.tensor([1, 1])
        assert torch.equal(m.logits(x, y0), m.logits(x, y1))
        for part in range(5):  # block 0's two LNs, block 1's, the final LN
            m.class_mod_emb.weight.zero_()
            m.class_mod_emb.weight[1].view(-1, 16)[2 * part + 1] = 0.5  # a scale of class 1
            assert not torch.equal(m.logits(x, y0), m.logits(x, y1)), part


def test_guidance_stays_out_of_the_default_key():
    """Rows and graph keys written before guidance existed keep their key; a guided
    sampler is keyed and labelled apart."""
    assert Tokens().canonical() == {"temperature": 1.0, "top_k": None}
    assert Tokens.parse({"guidance": "1"}).key() == Tokens().key()
    guided = Tokens.parse({"guidance": "3"})
    assert guided.canonical()["guidance"] == 3.0 and guided.key() != Tokens().key()
    assert guided.label() == "default(guidance=3.0), T 1"
    assert Tokens.parse(guided.canonical()) == guided


def test_config_and_creation():
    m = zoo.create("ar-transformer", dataset="mnist", conditional=True, dim=16, depth=1,
                   heads=2)
    assert m.conditional and m.num_classes == 10
    assert m.class_emb.weight.shape == (11, 16)  # the last row: the null label
    with pytest.raises(ConfigError, match="label_dropout"):
        zoo.create("ar-transformer", image_shape=(1, 4, 4), label_dropout=1.0)
    with pytest.raises(ConfigError, match="num_classes >= 1"):
        ARTransformer(ARTransformerConfig(dim=8, heads=2, conditional=True), (1, 4, 4))


def test_errors():
    plain = ARTransformer(ARTransformerConfig(dim=8, depth=1, heads=2), (1, 3, 3))
    with pytest.raises(ConfigError, match="guidance=2 needs a class-conditional") as e:
        plain.sample(1, guidance=2)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="not class-conditional"):
        plain.sample(1, labels=0)
    with pytest.raises(ConfigError, match="not class-conditional"):
        plain.nll(torch.zeros(1, 1, 3, 3, dtype=torch.uint8), labels=0)
    m = cond()
    with pytest.raises(ConfigError, match=r"labels must lie in 0\.\.2"):
        m.sample(2, labels=torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match=r"labels must lie in 0\.\.2"):
        m.sample(1, labels=-1)
    with pytest.raises(ConfigError, match="guidance must be a finite number >= 0"):
        m.sample(1, labels=0, guidance=-1)
    with pytest.raises(ConfigError, match="labels must be 2 integers"):
        m.sample(2, labels=torch.tensor([0]))
    with pytest.raises(ConfigError, match="class-conditional"):
        m.train_step(Batch.unlabelled(torch.zeros(2, 1, 4, 5, dtype=torch.uint8)),
                     m.configure_optimizers())


def test_the_class_conditions_and_guidance_zero_is_the_null_label():
    m = cond()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    null = m.sample(6, generator=gen())
    assert torch.equal(m.sample(6, labels=y, guidance=0, generator=gen()), null)
    assert torch.equal(m.sample(6, labels=y, guidance=0.0, generator=gen(), batch_size=4),
                       m.sample(6, generator=gen(), batch_size=4))
    plain = m.sample(6, labels=y, guidance=1, generator=gen())
    assert not torch.equal(plain, null)
    guided = m.sample(6, labels=y, guidance=3, generator=gen())
    assert not torch.equal(guided, plain)
    # without guidance= a conditional model guides by its default
    assert torch.equal(m.sample(6, labels=y, generator=gen()),
                       m.sample(6, labels=y, guidance=DEFAULT_GUIDANCE, generator=gen()))
    assert DEFAULT_GUIDANCE != 1.0
    # an int asks for one class for every image
    assert torch.equal(m.sample(3, labels=2, generator=gen()),
                       m.sample(3, labels=torch.tensor([2, 2, 2]), generator=gen()))
    # without labels, guidance has nothing to push away from: the null label's samples
    assert torch.equal(m.sample(6, guidance=3, generator=gen()), null)


@pytest.mark.parametrize("options", [{"guidance": 2.5}, {"guidance": 2.5, "top_k": 10,
                                                         "temperature": 0.7},
                                     {"guidance": 4.0, "temperature": 0}, {}])
def test_cached_and_uncached_decoders_agree_with_guidance(options):
    m = cond()
    y = torch.tensor([2, 0, 1])
    a = m.sample(3, labels=y, generator=gen(), batch_size=2, **options)
    b = m.sample(3, labels=y, generator=gen(), batch_size=2, use_cache=False, **options)
    assert torch.equal(a, b)
    prefix = a[:, :, :2]
    c = m.sample(3, labels=y, prefix=prefix, generator=gen(), **options)
    d = m.sample(3, labels=y, prefix=prefix, generator=gen(), use_cache=False, **options)
    assert torch.equal(c, d) and torch.equal(c[:, :, :2], prefix)


def test_greedy_guided_tokens_are_the_argmax_of_the_mixed_logits():
    """Teacher-forced: every token of a greedy guided sample is the argmax of
    l_null + w (l_y - l_null) of the full (uncached) forward at its position."""
    m = cond()
    y, w = torch.tensor([0, 1, 2, 1]), 3.0
    s = m.sample(4, labels=y, guidance=w, temperature=0)
    with torch.no_grad():
        lc, lu = m.logits(s, y).float(), m.logits(s).float()
    assert torch.equal((lu + w * (lc - lu)).argmax(-1), m.to_tokens(s))
    # the guided samples differ from the conditional ones
    assert not torch.equal(s, m.sample(4, labels=y, guidance=1, temperature=0))


def test_nll_conditional_and_unconditional():
    m = cond()
    x = m.sample(3, labels=torch.tensor([0, 1, 2]), generator=gen())
    uncond, given = m.nll(x), m.nll(x, labels=torch.tensor([0, 1, 2]))
    assert uncond.shape == given.shape == (3,) and not torch.allclose(uncond, given)
    # the class replaces the start token: the per-image NLLs match the forward's
    assert torch.allclose(m.nll(x[:1], labels=0), given[:1])
    assert m.nll(x, labels=1, batch_size=2).shape == (3,)
    assert m.describe_nll() == "exact, unconditional (the null label)"
    assert m.describe_nll(labels=[0]) == "exact, conditional on the labels"


def test_training_uses_label_dropout():
    """With label_dropout 0 the null row gets no gradient; with 1 - eps only it does."""
    for p, null_moves, class_moves in ((0.0, False, True), (0.999, True, False)):
        m = cond(label_dropout=p).train()
        m.attach_training(noise_generator=torch.Generator().manual_seed(0))
        before = m.class_emb.weight.detach().clone()
        x = torch.randint(0, 256, (4, 1, 4, 5), generator=gen(), dtype=torch.uint8)
        out = m.train_step(Batch(x, torch.tensor([0, 1, 2, 0])), m.configure_optimizers())
        assert out["loss_bpd"] > 0
        moved = (m.class_emb.weight.detach() != before).any(1)
        assert bool(moved[3]) == null_moves and bool(moved[:3].any()) == class_moves


def test_graphed_guided_sampling_draws_what_the_eager_loop_draws(monkeypatch):
    """The captured loop with guidance, through the CPU stand-in of a CUDA graph
    (tests/test_e2e_fast_path.py): labels are an input of the replay, not baked in."""
    import zoo.models.autoregressive as module

    monkeypatch.setattr(module, "capture", capture_on_cpu)
    monkeypatch.setattr(module, "graph_mode", lambda value, device: (value is True, False))
    m = cond()
    y = torch.tensor([0, 1, 2, 1])
    for w in (1.0, 2.5):
        for labels in (y, y.flip(0)):  # the second replays the loop captured for the first
            def draw(graph, labels=labels, w=w):
                return m.sample(4, labels=labels, guidance=w, batch_size=4, cuda_graph=graph,
                                generator=torch.Generator().manual_seed(0))
            assert torch.equal(draw(True), draw(False))


@pytest.mark.slow
def test_trained_on_mnist_the_class_conditions_and_guidance_sharpens_it(tmp_path):
    """Conditioning is real: after brief training on MNIST at 14x14 (``mnist_14``; the ci
    suite's transformer, conditional, 400 steps of 16), test images are likelier under their
    own class than under another, samples show the class asked for far above chance, and
    guidance raises that share.

    Measured once (one CPU thread, 13 CPU-s of training): the true class's NLL below the
    next class's by 0.171 bits/dim on 100 test images; class accuracy of 200 samples
    (classes 0..9 in turn) 0.35 at w = 1 and 0.62 at w = 3 (chance 0.1; at 28x28 the same
    400 steps, at seven times the cost, gave 0.028 bits/dim, 0.22 and 0.365).
    """
    from zoo.train import Trainer, load_run

    torch.manual_seed(0)
    images, labels = mnist_14()
    model = zoo.create("ar-transformer", image_shape=(1, 14, 14), conditional=True,
                       num_classes=10, dim=32, depth=2, heads=2, mlp_ratio=2.0,
                       pos_embedding="factorized", lr=1e-2, warmup_steps=150)
    Trainer(model, "mnist", out=tmp_path, images=images, labels=labels, steps=400,
            batch_size=16, ema_decay=None, progress=False).fit()
    trained = load_run(tmp_path)
    x, y = mnist_14("test")
    x, y = x[:100], y[:100].long()
    true, wrong = trained.nll(x, labels=y).mean(), trained.nll(x, labels=(y + 1) % 10).mean()
    assert wrong - true > 0.08, (true, wrong)

    asked = torch.arange(200) % 10
    acc = {w: class_accuracy_14(trained.sample(200, labels=asked, guidance=w,
                                               generator=torch.Generator().manual_seed(1)),
                                asked)
           for w in (1.0, 3.0)}
    assert acc[3.0] > 0.45 and acc[3.0] > acc[1.0] + 0.1, acc

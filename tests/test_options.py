"""zoo.options: one parser for option values, and typed sampler options parsed once, bound to
the model and keying the CUDA graphs."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_ddpm

import zoo
from zoo.core import ConfigError
from zoo.models.diffusion import DDIM, Ancestral, UniPC
from zoo.nn.graphs import model_graphs
from zoo.options import OptionError, parse_value


def test_one_parser_for_strings_and_plain_values():
    assert parse_value("5", int, "steps") == parse_value(5, int, "steps") == 5
    assert parse_value("0.5", float, "eta") == parse_value(0.5, float, "eta") == 0.5
    assert parse_value("false", bool, "clip_x0") is False
    assert parse_value("none", "int | None", "top_k") is None
    assert parse_value("16,32", "tuple[int, ...]", "channels") == (16, 32)
    assert parse_value([16, 32], "tuple[int, ...]", "channels") == (16, 32)
    with pytest.raises(ConfigError, match="steps must be an integer"):
        parse_value("many", int, "steps")
    with pytest.raises(ConfigError, match="valid: trailing, leading"):
        parse_value("uniform", 'Literal["trailing", "leading"]', "spacing")


def test_sampler_options_are_parsed_once_into_their_class_and_bound_to_the_model():
    m = tiny_ddpm()
    s = m.parse_sampler({"sampler": "ddim", "steps": "5", "eta": "0.5"})
    assert s == DDIM(steps=5, eta=0.5)
    assert s.canonical() == {"steps": 5, "eta": 0.5, "spacing": "trailing", "clip_x0": True}
    assert s.label() == "ddim, 5 steps, eta 0.5"
    # the model fills in what depends on it: ddim's default steps, ancestral's T
    assert m.parse_sampler({"sampler": "ddim"}).steps == 20
    assert m.parse_sampler({"sampler": "ddpm"}) == Ancestral(steps=20)
    # no sampler named: the model's default, its options completed by the call's
    assert m.parse_sampler({}) == UniPC(steps=10, clip_x0=True)
    assert m.parse_sampler({"steps": 4}) == UniPC(steps=4, clip_x0=True)
    with pytest.raises(OptionError, match="variance is an option of sampler='ddpm', not of "
                                          "'unipc'"):
        m.parse_sampler({"variance": "beta"})
    assert DDIM(spacing="leading", steps=5).label() == "ddim(spacing=leading), 5 steps, eta 0"
    with pytest.raises(OptionError) as e:
        m.parse_sampler({"sampler": "ddim", "variance": "beta"})
    assert e.value.option == "variance" and "option of sampler='ddpm'" in str(e.value)


def test_an_options_object_samples_what_its_keywords_sample():
    m = tiny_ddpm()
    a = m.sample(2, generator=torch.Generator().manual_seed(1), sampler=DDIM(steps=3))
    b = m.sample(2, generator=torch.Generator().manual_seed(1), sampler="ddim", steps=3)
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="inside DDIM"):
        m.sample(1, sampler=DDIM(steps=3), eta=1.0)


def test_the_graph_key_is_the_bound_options():
    # steps=None and steps=20 (its default here) are one plan: one key
    m = tiny_ddpm()
    graphs = model_graphs(m)
    for steps in (None, 20):
        graphs.worth_it((m.parse_sampler({"sampler": "ddim", "steps": steps}).key(), 4), True)
    assert len(graphs.seen) == 1


def test_every_family_declares_its_samplers():
    for name in zoo.available():
        cls = zoo.registry.spec(name).cls
        assert cls.samplers, name
        for s in cls.samplers:
            default = s()
            assert s.parse(default.canonical()) == default
            assert json.loads(json.dumps(default.canonical())) == default.canonical()

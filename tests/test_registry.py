"""zoo.registry: names, errors that list the valid choices, values parsed as the CLI gives them."""

from __future__ import annotations

import pytest

import zoo
from zoo.core import ConfigError


def test_registry_errors_list_valid_choices():
    assert {"vae-mlp", "vae-conv"} <= set(zoo.available())
    with pytest.raises(ConfigError, match="available models: .*vae-mlp"):
        zoo.create("vae-huge", dataset="mnist")
    with pytest.raises(ConfigError, match="valid options: .*latent_dim"):
        zoo.create("vae-mlp", dataset="mnist", latent=3)
    with pytest.raises(ConfigError, match="valid datasets"):
        zoo.create("vae-mlp", dataset="imagenet")
    with pytest.raises(ConfigError, match="discretized-logistic"):
        zoo.create("vae-mlp", dataset="mnist", likelihood="gaussian")


def test_coerce_parses_cli_values():
    from zoo.registry import parse_value

    assert parse_value("vae-conv", "channels", "16,32") == (16, 32)
    assert parse_value("vae-mlp", "lr", "3e-4") == 3e-4
    assert parse_value("vae-mlp", "likelihood", "bernoulli") == "bernoulli"
    with pytest.raises(ConfigError, match="must be an integer"):
        parse_value("vae-mlp", "latent_dim", "many")
    with pytest.raises(ConfigError, match="valid: mlp, conv"):
        parse_value("vae-mlp", "arch", "rnn")



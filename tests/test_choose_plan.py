"""zoo.choose.plan and presets: the budget, the halving rounds, the preset rule."""

import pytest

from zoo.choose import plan, presets
from zoo.errors import ConfigError


@pytest.mark.parametrize("text, seconds", [("15m", 900), ("900s", 900), ("1h30m", 5400),
                                           ("2h", 7200), (" 90 sec ", 90), ("1.5min", 90)])
def test_wall_time_budgets(text, seconds):
    assert plan.parse_budget(text) == plan.Budget(seconds=seconds)


def test_flops_budget():
    assert plan.parse_budget("6e12") == plan.Budget(flops=6e12)


@pytest.mark.parametrize("text", ["", "15", "fast", "10s", "-5m", "1e3", "inf", "nan", "5d"])
def test_bad_budgets_are_refused(text):
    with pytest.raises(ConfigError, match="budget"):
        plan.parse_budget(text)


@pytest.mark.parametrize("n, expected", [
    (1, [(1.0, 1)]), (2, [(1.0, 2)]), (3, [(0.5, 3), (1.0, 2)]),
    (5, [(0.25, 5), (0.5, 3), (1.0, 2)]), (8, [(0.25, 8), (0.5, 4), (1.0, 2)]),
    (9, [(0.125, 9), (0.25, 5), (0.5, 3), (1.0, 2)])])
def test_rounds_halve_to_two_finalists_and_double_the_length(n, expected):
    assert plan.rounds(n) == expected


def test_training_units_count_increments_and_extra_seeds():
    # five candidates: 5 x 1/4, then 3 x 1/4 more, then 2 x 1/2 more, and 2 x 2 extra seeds
    assert plan.training_units(plan.rounds(5), seeds=3) == pytest.approx(1.25 + 0.75 + 1 + 4)
    assert plan.training_units(plan.rounds(1), seeds=1) == 1


def test_final_seconds_spend_the_budget():
    schedule = plan.rounds(5)
    probes = [plan.Probe(0.05, 0.001, 0.1)] * 5
    f = plan.final_seconds(900, schedule, probes, 500, 1000, seeds=3)
    units = plan.training_units(schedule, 3)
    # rounds at N = 500, finalists' seeds at 1000 and their extra figures
    evals = 5 * 2.5 + 3 * 2.5 + 2 * (3 * 3.0 + plan.FINAL_EXTRA_SECONDS)  # equal probes
    starts = 5 * 0.1 + 2 * 2 * 0.1
    assert f * units + evals + starts + 5 == pytest.approx(900 * (1 - plan.MARGIN))
    assert plan.final_seconds(10, schedule, probes, 500, 1000) == 0.0  # nothing left


def test_steps():
    p = plan.Probe(step_seconds=0.1, image_seconds=0, flops_per_image=1e6)
    assert plan.steps_for(10, p) == 100
    assert plan.steps_for(0, p) == 1
    assert plan.steps_for_flops(6.4e9, p, batch_size=64) == 100
    with pytest.raises(ConfigError, match="FLOPs"):
        plan.steps_for_flops(1e9, plan.Probe(0.1, 0), 64)


def test_pick_takes_the_largest_preset_that_gets_its_steps():
    small, large = presets.PRESETS["ddpm"]
    # the large preset takes 4x the time per step
    def steps_at(seconds):
        return lambda p: int(seconds / (0.05 if p is small else 0.2))
    assert presets.pick((small, large), steps_at(1000))[0] is large  # 5000 steps >= 3000
    chosen, why = presets.pick((small, large), steps_at(100))  # large 500 < 3000
    assert chosen is small and "2000 steps at the final length" in why
    chosen, why = presets.pick((small, large), steps_at(5))  # 100 < 400
    assert chosen is None and "fewer than the 400" in why


def test_candidates_default_and_narrowed():
    chosen, left_out = presets.candidates()
    assert set(chosen) == set(presets.PRESETS)
    assert "latent-diffusion" in left_out and "vq-vae" in left_out
    chosen, left_out = presets.candidates(["ddpm", "vae-conv"], exclude=["vae-conv"])
    assert chosen == ["ddpm"] and left_out == {"vae-conv": "excluded (--exclude)"}
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        presets.candidates(["nope"])
    with pytest.raises(ConfigError, match="no candidate family left"):
        presets.candidates(["ddpm"], exclude=["ddpm"])


@pytest.mark.parametrize("n, least, expected", [
    (5, 0.3, [(0.3, 5), (0.5, 3), (1.0, 2)]),
    (5, 0.54, [(0.54, 5), (1.0, 2)]),  # the first two rounds merged: 5 -> 2 at once
    (5, 1.0, [(1.0, 5)]),  # nobody can be judged early: all train the whole length
    (8, 0.2, [(0.25, 8), (0.5, 4), (1.0, 2)]),
])
def test_no_round_is_shorter_than_the_least_share(n, least, expected):
    assert plan.rounds(n, least) == expected


@pytest.mark.parametrize("model", sorted(presets.NLL_OPTIONS))
def test_the_nll_options_of_a_tournament_are_valid(model):
    import torch

    import zoo
    from zoo import data as zdata

    small = {"channels": 8, "norm_groups": 4} if model != "vae-conv" else {}
    m = zoo.create(model, dataset="mnist", **small).eval()
    x, _ = zdata.load("mnist", "test")
    with torch.no_grad():
        bpd = m.nll(x[:2], **presets.NLL_OPTIONS[model])
    assert bpd.shape == (2,) and torch.isfinite(bpd).all()

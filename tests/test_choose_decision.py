"""zoo.choose.decision and document: flags, the Pareto front, the headline's wording."""

import numpy as np

from zoo.choose import decision, document


def test_loss_trend(tmp_path):
    rows = ["step,seconds,images_per_s,loss"] + [f"{i},0,0,{10 - 0.5 * i}" for i in range(20)]
    (tmp_path / "losses.csv").write_text("\n".join(rows) + "\n")
    fall = decision.loss_trend(tmp_path)
    assert fall is not None and fall > 0.3  # 10 - 0.5 i falls fast at the end
    flat = ["step,seconds,images_per_s,loss"] + [f"{i},0,0,1.0" for i in range(20)]
    (tmp_path / "losses.csv").write_text("\n".join(flat) + "\n")
    assert decision.loss_trend(tmp_path) == 0.0
    (tmp_path / "losses.csv").write_text("step,seconds,images_per_s,loss\n1,0,0,1\n")
    assert decision.loss_trend(tmp_path) is None  # too short to say


def test_pareto():
    points = {"a": (1.0, 10.0), "b": (2.0, 100.0), "c": (3.0, 50.0), "d": (1.0, 5.0)}
    assert decision.pareto(points) == ["a", "b"]


def _state(kids: dict, recall: dict, seeds: int = 3) -> dict:
    """A finished two-round tournament's state with the given final KIDs per seed."""
    rng = np.random.default_rng(0)
    evals = {}
    for c, per_seed in kids.items():
        evals[f"{c}/0/0"] = {"kid": {"value": per_seed[0] * 2, "draws": [], "ci95": [0, 9]}}
        for s, v in enumerate(per_seed):
            evals[f"{c}/{s}/1"] = {
                "kid": {"value": v, "draws": list(v + rng.normal(0, 0.01, 50)),
                        "ci95": [v - 0.02, v + 0.02]},
                "fid": {"value": 10 * v, "draws": list(10 * v + rng.normal(0, 0.1, 50)),
                        "ci95": [10 * v - 0.2, 10 * v + 0.2]},
                "recall": recall[c], "sample_images_per_s": 100.0 if c == "a" else 1000.0}
    return {
        "args": {"seeds": seeds, "data": "mnist"}, "evals": evals, "alive": [list(kids),
                                                                             list(kids)],
        "plan": {"schedule": [[0.5, 2], [1.0, 2]], "budget": "15 min 0 s", "device": "cpu",
                 "candidates": {c: {"model": "vae-conv", "name": "default"} for c in kids},
                 "steps": {c: [100, 200] for c in kids}},
        "train_summary": {f"{c}/0": {"images_per_s": 500.0} for c in kids},
    }


def test_a_clear_winner_is_named_with_its_probability(tmp_path):
    state = _state({"a": [0.1, 0.11, 0.12], "b": [0.5, 0.52, 0.51]}, {"a": 0.6, "b": 0.6})
    rec = decision.recommend(state, tmp_path)
    lines = document.headline(state, rec)
    assert lines[0].startswith("**For mnist at 15 min 0 s on cpu: use a (default)**")
    assert "best KID in 3 of 3 seeds; probability it is best 1.00" in lines[0]
    assert "runner-up b" in lines[0] and "behind" in lines[0]
    assert any(ln.startswith("Sampling speed at the winner's quality: a") for ln in lines)


def test_a_tie_is_called_a_tie(tmp_path):
    state = _state({"a": [0.10, 0.30, 0.20], "b": [0.21, 0.19, 0.22]}, {"a": 0.6, "b": 0.6})
    rec = decision.recommend(state, tmp_path)
    assert rec["quality"]["tie"]
    line = document.headline(state, rec)[0]
    assert "a tie" in line
    # tied on quality, b samples 10x faster: the speed line names it
    assert rec["fastest_at_quality"] == "b"


def test_a_collapsed_winner_is_passed_over_and_said_so(tmp_path):
    state = _state({"a": [0.1, 0.11, 0.12], "b": [0.5, 0.52, 0.51]}, {"a": 0.01, "b": 0.6})
    rec = decision.recommend(state, tmp_path)
    assert rec["flags"]["a"][0].startswith("collapsed")
    lines = document.headline(state, rec)
    assert "use b (default)" in lines[0]
    assert "a has the best KID but its samples are collapsed" in lines[1]


def test_the_still_learning_flag_reads_the_first_seeds_run(tmp_path):
    """With `--seed 1` the runs are seed1, seed2, ...: the loss read is seed1's."""
    state = _state({"a": [0.1, 0.11, 0.12], "b": [0.5, 0.52, 0.51]}, {"a": 0.6, "b": 0.6})
    state["args"]["seed"] = 1
    falling = ["step,seconds,images_per_s,loss"] + [f"{i},0,0,{10 - 0.5 * i}" for i in range(20)]
    (tmp_path / "runs" / "a" / "seed1").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "seed1" / "losses.csv").write_text("\n".join(falling) + "\n")
    found = decision.flags(state, tmp_path)
    assert any(f.startswith("still learning") for f in found.get("a", [])), found
    assert not found.get("b")

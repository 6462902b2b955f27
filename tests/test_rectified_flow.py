"""The rectified-flow family: the teacher's coupled pairs, the student built as its teacher,
reflow's and distillation's losses, the straightness of a flow, and a run through the
command line (train, resume, sample, eval) with a checkpoint that refuses another
teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_one_line_error, gen, nonzero, zoo_main

import zoo
from zoo.core import ConfigError
from zoo.metrics import straightness
from zoo.models.flow import TIME_SCALE
from zoo.models.flow.straightness import euler_straightness

TINY = {"channels": 8, "norm_groups": 4, "max_levels": 2}
SHAPE = (1, 8, 8)


def teacher(tmp_path, seed: int = 1, **config):
    """A saved flow-matching teacher whose velocity is not zero (a fresh U-Net's last layer
    is), and its file."""
    torch.manual_seed(seed)
    t = zoo.create("flow-matching", image_shape=SHAPE, **{**TINY, **config})
    nonzero(t)
    path = tmp_path / f"teacher-{seed}.pt"
    t.save(path)
    return t.eval(), path


def images(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=gen(0))


def recording(model) -> list:
    """``model.net``'s (x, t) of every call from now on (the call itself unchanged)."""
    calls, forward = [], model.net.forward

    def record(x, t, *labels):
        calls.append((x.detach().clone(), t.detach().clone()))
        return forward(x, t, *labels)

    model.net.forward = record
    return calls


# -- the student and its pairs -------------------------------------------------------------------


def test_the_student_is_its_teacher_at_the_start(tmp_path):
    t, path = teacher(tmp_path, conditional=True, num_classes=3)
    m = zoo.create("rectified-flow", image_shape=SHAPE, teacher=str(path))
    assert m.conditional and m.num_classes == 3 and m.config.channels == 8
    assert m.config.channel_mult == t.config.channel_mult
    student, held = m.net.state_dict(), t.net.state_dict()
    assert student.keys() == held.keys()
    assert all(torch.equal(student[k], held[k]) for k in student)
    assert all(not p.requires_grad for p in m.teacher.parameters())
    assert m.configure_optimizers()["flow"].param_groups[0]["params"] == list(m.net.parameters())
    with pytest.raises(ConfigError, match="channels of rectified-flow is filled in by zoo "
                                          "from its teacher"):
        zoo.create("rectified-flow", image_shape=SHAPE, teacher=str(path), channels=16)


def test_pairs_are_the_teachers_euler_ode_deterministic_for_a_seed(tmp_path):
    t, path = teacher(tmp_path)
    m = zoo.create("rectified-flow", image_shape=SHAPE, teacher=str(path), pair_steps=3)
    m.attach_training(noise_generator=gen(5))
    z, x0 = m.pairs(4)
    m.attach_training(noise_generator=gen(5))
    z2, x02 = m.pairs(4)
    assert torch.equal(z, z2) and torch.equal(x0, x02)
    m.attach_training(noise_generator=gen(6))
    assert not torch.equal(m.pairs(4)[0], z)
    x = z.clone()  # three equal Euler steps of the teacher from t = 1 to 0
    with torch.no_grad():
        for k in range(3):
            x = x - t.net(x, torch.full((1,), (1 - k / 3) * TIME_SCALE)) / 3
    torch.testing.assert_close(x0, x, atol=1e-5, rtol=1e-5)
    assert not x0.is_inference()


@pytest.mark.parametrize("distill", [False, True])
def test_the_loss_is_flow_matching_on_the_pairs(tmp_path, distill):
    """Reflow regresses z - x_0 at x_t = (1 - t) x_0 + t z, t drawn; distillation at t = 1
    alone (x_t = z: the one-step map x_0 = z - v(z, 1) in L2)."""
    _, path = teacher(tmp_path)
    m = zoo.create("rectified-flow", image_shape=SHAPE, teacher=str(path), pair_steps=2,
                   distill=distill, lr=1e-12)
    m.attach_training(noise_generator=gen(3))
    z, x0 = m.pairs(4)
    m.attach_training(noise_generator=gen(3))
    calls = recording(m)
    loss = m.train_step(images(), m.configure_optimizers())["loss"]
    x_t, t = calls[-1]
    s = (t / TIME_SCALE).view(-1, 1, 1, 1)
    if distill:
        assert torch.equal(t, torch.full((4,), float(TIME_SCALE))) and torch.equal(x_t, z)
    else:
        assert len(set(t.tolist())) == 4
    torch.testing.assert_close(x_t, torch.lerp(x0, z, s))
    with torch.no_grad():
        want = F.mse_loss(m.net(x_t, t), z - x0).item()
    assert loss == pytest.approx(want, rel=1e-4)
    assert m.default_sampler == ({"sampler": "euler", "steps": 1} if distill else
                                 {"sampler": "euler", "steps": 2, "spacing": "trailing"})


def test_a_missing_or_wrong_teacher_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="give --set teacher=RUN"):
        zoo.create("rectified-flow", image_shape=SHAPE)
    gan = zoo.create("gan-dcgan", image_shape=SHAPE)
    gan.save(tmp_path / "gan.pt")
    with pytest.raises(ConfigError, match="straightens a flow-matching or rectified-flow run; "
                                          ".* holds a"):
        zoo.create("rectified-flow", image_shape=SHAPE, teacher=str(tmp_path / "gan.pt"))
    _, path = teacher(tmp_path)
    with pytest.raises(ConfigError, match="pair_steps"):
        zoo.create("rectified-flow", image_shape=SHAPE, teacher=str(path), pair_steps=0)


def test_a_rectified_flow_teaches_the_next(tmp_path):
    """2-rectified flow: a reflow run is a teacher (holding its own)."""
    _, path = teacher(tmp_path)
    first = zoo.create("rectified-flow", image_shape=SHAPE, teacher=str(path))
    first.save(tmp_path / "first.pt")
    second = zoo.create("rectified-flow", image_shape=SHAPE, teacher=str(tmp_path / "first.pt"),
                        distill=True)
    assert type(second.teacher) is type(first) and second.teacher.teacher is not None
    second.attach_training(noise_generator=gen(0))
    assert second.train_step(images(), second.configure_optimizers())["loss"] >= 0


# -- straightness --------------------------------------------------------------------------------


def test_straightness_of_a_straight_flow_is_zero_and_of_a_curved_one_positive(tmp_path):
    z = torch.randn(6, *SHAPE, generator=gen(0))
    end = torch.randn(6, *SHAPE, generator=gen(1))
    straight = euler_straightness(lambda x, t: (x - end) / t, z, steps=5)  # x_t on the line
    assert straight.shape == (6,) and straight.abs().max() < 1e-10
    curved = euler_straightness(lambda x, t: (x - end) / t + math.sin(8 * t) * end, z, 5)
    assert (curved > 1e-3).all()
    t, _ = teacher(tmp_path)
    s, err = t.straightness(8, steps=4, generator=gen(2))
    assert s > 0 and 0 < err < s
    assert t.straightness(8, steps=4, generator=gen(2)) == (s, err)
    with pytest.raises(ConfigError, match="n must be"):
        t.straightness(1)
    result = straightness.evaluate(t, n=8, seed=3, steps=4)
    assert result == {"straightness": t.straightness(8, steps=4, generator=gen(3))[0],
                      "straightness_stderr": result["straightness_stderr"],
                      "straightness_n": 8, "straightness_steps": 4}
    assert straightness.format_straightness(result).startswith("straightness ")


# -- the command line ----------------------------------------------------------------------------

SETS = ["--set", "channels=8", "--set", "max_levels=2"]


def test_train_resume_sample_and_eval_through_the_cli(tmp_path, capsys):
    """A tiny teacher, a reflow run from it, resumed, sampled (its default: two Euler
    calls), evaluated (straightness on stdout, in eval.json and the card)."""
    from zoo.cli import main

    def zoo_cli(*args: str) -> str:
        assert main(list(args)) == 0
        return capsys.readouterr().out

    t_run, run = tmp_path / "teacher", tmp_path / "reflow"
    zoo_cli("train", "flow-matching", "--dataset", "mnist", "--steps", "2", "--batch-size", "4",
            "--out", str(t_run), *SETS)
    train = ["train", "rectified-flow", "--dataset", "mnist", "--batch-size", "4",
             "--out", str(run)]
    zoo_cli(*train, "--steps", "2", "--set", f"teacher={t_run}", "--set", "pair_steps=2")
    assert "3 steps" in zoo_cli(*train, "--steps", "3", "--resume")
    info = json.loads((run / "run.json").read_text())
    config = info["model_config"]
    assert config["channels"] == 8 and len(config["teacher_sha256"]) == 64
    zoo_cli("sample", str(run), "-n", "4", "-o", str(tmp_path / "grid.png"))
    out = zoo_cli("eval", str(run), "-n", "8", "--extractor", "mnist-classifier", "--metrics",
                  "fid", "--batch-size", "8", "--bootstrap", "0")
    result = json.loads((run / "eval.json").read_text())
    assert result["straightness"] > 0 and result["straightness_n"] == 8
    assert result["straightness_stderr"] > 0 and result["straightness_steps"] == 32
    assert "straightness" in out and "straightness" in (run / "README.md").read_text()


def test_a_checkpoint_whose_teacher_was_edited_is_refused_in_one_line(tmp_path):
    _, path = teacher(tmp_path)
    zoo.create("rectified-flow", image_shape=SHAPE, teacher=str(path)).save(tmp_path / "m.pt")
    path.unlink()  # the checkpoint holds the teacher: its run is not needed
    assert zoo.load(tmp_path / "m.pt").sample(1).shape == (1, *SHAPE)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=False)
    key = next(k for k in ckpt["state_dict"] if k.startswith("teacher.net."))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1
    torch.save(ckpt, tmp_path / "edited.pt")
    proc = zoo_main("sample", str(tmp_path / "edited.pt"), "-n", "1", "-o",
                   str(tmp_path / "x.png"), check=False)
    assert_one_line_error(proc, "teacher weights", "not the ones it was trained over")

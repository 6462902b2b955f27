"""The extractor validity card (zoo.metrics.validity, zoo.metrics.validity_card): the
Spearman/direction logic, the defects, the copycat flag, the N for a 5% interval against a
case with a known answer, the card on disk, the report's link and the CLI's errors."""

import json

import pytest
import torch

from zoo.metrics import validity
from zoo.metrics.validity_card import find_card, markdown, write_card


def test_spearman_and_the_verdict_follow_the_expected_direction():
    assert validity.spearman([1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert validity.spearman([5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert validity.spearman([1, 3, 2, 4, 5]) == pytest.approx(0.9)  # one swap
    assert validity.spearman([2, 2, 2, 2, 2]) == 0.0  # a figure that does not move
    assert validity.verdict(1.0, +1) == "pass"
    assert validity.verdict(-1.0, +1) == "fail"  # FID falling as noise grows
    assert validity.verdict(0.9, -1) == "fail"  # precision rising as noise grows
    assert validity.verdict(-0.9, -1) == "pass"
    assert validity.verdict(-0.8, -1) == "fail"
    assert validity.verdict(0.3, 0) == "n/a"
    assert validity.verdict(validity.spearman([5, 4, 2, 3, 1]), -1) == "pass"  # -0.9 exactly
    # recall at its floor: never rises, but ties cost the rank correlation
    assert validity.spearman([0.58, 0.04, 0.0, 0.0, 0.0]) < -0.85
    assert validity.saturates([0.58, 0.04, 0.0, 0.0, 0.0], -1)
    assert not validity.saturates([0.90, 0.92, 0.91, 0.90, 0.88], -1)  # a step the wrong way
    assert not validity.saturates([1, 2, 3, 4, 5], +1)  # no stall: a pass
    expected = validity.EXPECTED
    assert expected["noise"]["fid"] == +1 and expected["blur"]["kid"] == +1
    assert all(expected["noise"][f] == -1
               for f in ("precision", "recall", "density", "coverage"))
    assert expected["copycat"]["near_copies"] == +1
    assert expected["copycat"]["memorization_ratio"] == -1
    assert expected["copycat"]["fid"] == 0  # the quality figures cannot see a copycat


def test_the_defects_do_what_they_say():
    gen = torch.Generator().manual_seed(0)
    flat = torch.full((4, 1, 8, 8), 100, dtype=torch.uint8)
    assert torch.equal(validity.blur(flat, 1.5), flat)  # a flat image stays flat
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 0, 0] = 255
    assert validity.shift(x, 2)[0, 0, 2, 2] == 255 and validity.shift(x, 2)[0, 0, 0, 0] == 255
    ramp = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert set(validity.quantize(ramp, 1).unique().tolist()) == {0, 255}
    assert validity.quantize(ramp, 2).unique().numel() == 4
    noisy = validity.gaussian_noise(flat, 0.1, gen)
    assert 15 < float((noisy.float() - 100).std()) < 35
    ones = torch.ones(10, 1, 2, 2, dtype=torch.uint8)
    mixed = validity.mix(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), ones, 0.3, gen)
    assert int(mixed.flatten(1).amax(1).sum()) == 3
    groups = torch.arange(20) % 4
    kept = validity.drop_classes(groups.view(20, 1, 1, 1).to(torch.uint8), groups, [1, 3], 8,
                                 gen)
    assert set(kept.flatten().tolist()) <= {0, 2} and kept.shape[0] == 8


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(30, 3, generator=g), torch.randn(30, 3, generator=g) + 20])
    labels = validity.kmeans(x, 2, seed=0)
    assert labels[:30].unique().numel() == 1 and labels[30:].unique().numel() == 1
    assert labels[0] != labels[30]


def test_smallest_n_is_where_every_larger_n_is_within():
    assert validity.smallest_n({250: 0.08, 500: 0.04, 1000: 0.06, 2000: 0.03}) == 2000
    assert validity.smallest_n({250: 0.04, 500: 0.03}) == 250
    assert validity.smallest_n({250: 0.2, 500: 0.1}) is None


def test_the_n_for_a_5_percent_interval_has_its_known_answer():
    # precision 0.9 at every prefix (every 10th sample far from the real ones, the rest
    # copies of real samples): its bootstrap half-width is 1.96 sqrt(0.09 / N), relative
    # 0.65 / sqrt(N): 9.2% at N=50, 6.5% at 100, 3.3% at 400, so N=400 is the answer
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 4, generator=g)
    fake = real[torch.arange(400) % 200].clone()
    fake[::10] += 1000.0
    widths = validity.relative_halfwidths(fake, real, (50, 100, 400, 800), draws=300, seed=0,
                                          metrics=("pr",))
    assert set(widths["precision"]) == {50, 100, 400}  # the grid capped at what is there
    assert widths["precision"][100] == pytest.approx(0.065, rel=0.2)
    assert validity.smallest_n(widths["precision"]) == 400


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 1x8x8 images of 10 classes (a bright square at a place of its class)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    x = torch.rand(n, 1, 8, 8, generator=g) * 60
    for c in range(10):
        r, col = divmod(c, 4)
        x[labels == c, :, 2 * r:2 * r + 3, 2 * col:2 * col + 3] += 180
    return x.clamp(0, 255).to(torch.uint8), labels


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x.float() / 255, 2).flatten(1)


@pytest.fixture(scope="module")
def toy_card():
    test, labels = _toy(400, 0)
    train, _ = _toy(300, 1)
    ys = validity.Yardstick("pixels", "0" * 64, _pixels)
    base = validity.Yardstick("pixels-again", "1" * 64, _pixels)
    return validity.measure(ys, test, labels, train, n=100, n_reference=200, n_train=200,
                            grid=(50, 100, 200), draws=20, baseline=base)


def test_the_card_flags_the_copycat_and_reads_the_noise(toy_card):
    copy = toy_card["responses"]["extractor"]["defects"]["copycat"]
    assert copy["values"]["near_copies"][-1] == 1.0  # every sample is a training image
    assert copy["verdict"]["near_copies"] == "pass"
    assert toy_card["copycat"]["extractor"] == {"near_copies": 1.0, "flagged": True}
    noise = toy_card["responses"]["extractor"]["defects"]["noise"]
    assert noise["verdict"]["fid"] == "pass" and noise["rho"]["fid"] == pytest.approx(1.0)
    listed = {(w, d, f) for w, d, f, _ in toy_card["failures"]}
    for who, res in toy_card["responses"].items():
        for d, row in res["defects"].items():
            for f, v in row["verdict"].items():
                assert (v == "fail") == ((who, d, f) in listed)
    assert toy_card["n_for_interval"]["grid"] == [50, 100, 200]


def test_the_card_is_written_and_found_by_its_hash(tmp_path, toy_card):
    paths = write_card(tmp_path / "pixels", toy_card)
    assert [p.name for p in paths] == ["card.json", "card.md", "card.png"]
    assert json.loads(paths[0].read_text())["extractor"] == "pixels"
    text = paths[1].read_text()
    assert "# Validity card: pixels" in text and "N for 5%" in text
    assert find_card("pixels", "0" * 64, [tmp_path / "pixels"]) == paths[1]
    assert find_card("pixels", "f" * 64, [tmp_path / "pixels"]) is None  # other weights
    failing = json.loads(json.dumps(toy_card))
    failing["responses"]["extractor"]["defects"]["blur"]["verdict"]["fid"] = "fail"
    failing["failures"] = [["extractor", "blur", "fid", -0.5]]
    assert "FAIL" in markdown(failing) and "fid does not respond to blur" in markdown(failing)


def test_the_random_baseline_is_the_classifiers_architecture_with_seeded_weights():
    from zoo.metrics.features import load_classifier, resolve_extractor

    ext = resolve_extractor("mnist-classifier", "mnist", announce=False)
    a, b = validity.random_extractor(ext, 0), validity.random_extractor(ext, 0)
    assert a.sha256 == b.sha256 != validity.random_extractor(ext, 1).sha256
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(a.features(x), b.features(x))
    dim = load_classifier("mnist-classifier")[1]["config"]["feature_dim"]
    assert a.features(x).shape == (3, dim)
    assert a.sha256 != ext.sha256


def test_the_report_links_the_card_of_its_extractor(tmp_path, monkeypatch):
    from zoo.bench import report
    from zoo.metrics import validity_card

    card_dir = tmp_path / "cards" / "mnist-classifier"
    card_dir.mkdir(parents=True)
    (card_dir / "card.json").write_text(json.dumps(
        {"extractor": "mnist-classifier", "extractor_weights_sha256": "abc",
         "failures": [["extractor", "blur", "recall", -0.89],
                      ["baseline", "noise", "fid", 0.1]]}))
    (card_dir / "card.md").write_text("# card\n")
    monkeypatch.setattr(validity_card, "REPO_CARDS", tmp_path / "cards")
    run = tmp_path / "bench"
    run.mkdir()
    rows = [{"extractor": "mnist-classifier", "extractor_hash": "abc"}]
    items = report._card_links(rows, run)
    assert items == [(1, "mnist-classifier: [validity card](../cards/mnist-classifier/card.md)"
                         " (how each figure responds to graded defects); flagged, not "
                         "monotone in its defect: recall under blur")]
    other = report._card_links([{"extractor": "mnist-classifier", "extractor_hash": "x"}], run)
    assert "no validity card" in other[0][1]


@pytest.mark.parametrize("args, needle", [
    (["no-such-extractor"], "unknown feature extractor"),
    (["{tmp}"], "holds 0 extractors"),
    (["mnist-classifier", "--n", "0"], "--n must be >= 1"),
    (["mnist-classifier", "--n", "99999"], "n must be in"),
])
def test_the_card_command_refuses_in_one_line(tmp_path, capsys, args, needle):
    from zoo.cli import main

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["extractor", "card", *args, "--out", str(tmp_path / "card")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error:") and needle in err and "\n" not in err, err
    assert not (tmp_path / "card").exists()


def test_zoo_extractor_train_writes_the_card_beside_the_weights(tmp_path, monkeypatch,
                                                               one_thread, cache_env):
    from zoo import data
    from zoo.cli import main

    load = data.load
    monkeypatch.setattr(data, "load", lambda *a, **k: tuple(t[:300] for t in load(*a, **k)))
    ext = tmp_path / "ext"
    assert main(["extractor", "train", "--dataset", "mnist", "--epochs", "1", "--limit", "256",
                 "--batch-size", "64", "--channels", "8,16", "--feature-dim", "16",
                 "--threads", "1", "--out", str(ext)]) == 0  # the card by default
    card = json.loads((ext / "mnist-classifier-card" / "card.json").read_text())
    weights = json.loads((ext / "mnist-classifier.json").read_text())
    assert card["extractor_weights_sha256"] == weights["sha256"]
    assert card["dataset"] == "mnist" and card["n_reference"] == 150
    assert card["n_for_interval"]["grid"] == [150]  # the grid capped at the pool
    assert (ext / "mnist-classifier-card" / "card.md").is_file()


def test_unlabelled_images_drop_k_means_clusters():
    test, _ = _toy(400, 0)
    train, _ = _toy(300, 1)
    ys = validity.Yardstick("pixels", "0" * 64, _pixels)
    card = validity.measure(ys, test, None, train, n=100, n_reference=200, n_train=200,
                            grid=(100,), draws=10, baseline=False)
    assert card["classes"].startswith("k-means") and set(card["responses"]) == {"extractor"}
    drop = card["responses"]["extractor"]["defects"]["drop_classes"]
    assert drop["verdict"]["coverage"] == "pass"  # clusters of the toy classes: mode dropping

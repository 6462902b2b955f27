"""An extractor's validity card on disk: ``card.json``, ``card.md`` and ``card.png`` in one
folder (``write_card``), and where a report finds the card of the extractor its rows name
(``find_card``). The card itself is measured by ``zoo.metrics.validity``.

Light on purpose (no torch): the benchmark report links the card.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core import atomic_write

CARD_JSON, CARD_MD, CARD_PNG = "card.json", "card.md", "card.png"
#: the committed cards of the shipped extractors, in a source checkout
REPO_CARDS = Path(__file__).resolve().parents[2] / "reports" / "extractor-cards"
_SHORT = {"memorization_ratio": "memo ratio", "near_copies": "near copies",
          "drop_classes": "drop classes"}


def write_card(out_dir: str | os.PathLike, card: dict, figure: bool = True) -> list[Path]:
    """Write ``card`` (``validity.measure``'s dict) as ``card.json`` and ``card.md`` (and
    ``card.png``, the figures against severity, with ``figure``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(card, indent=1) + "\n"
    atomic_write(out / CARD_JSON, lambda tmp: Path(tmp).write_text(text))
    md = markdown(card, CARD_PNG if figure else None)
    atomic_write(out / CARD_MD, lambda tmp: Path(tmp).write_text(md))
    paths = [out / CARD_JSON, out / CARD_MD]
    if figure:
        paths.append(save_figure(card, out / CARD_PNG))
    return paths


def default_dir(name: str, weights: str | os.PathLike) -> Path:
    """Where a card goes unless told: ``<name>-card/`` beside the weights, or
    ``extractor-cards/<name>/`` for an extractor shipped in the package."""
    weights = Path(weights).resolve()
    if weights.parent == (Path(__file__).resolve().parent / "weights"):
        return Path("extractor-cards") / name
    return weights.parent / f"{name}-card"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _cell(d: dict, f: str) -> str:
    rho, v = d["rho"][f], d["verdict"][f]
    if v == "n/a":
        return f"({rho:+.2f})"
    if v == "pass":
        return f"{rho:+.2f} ok"
    return f"**{rho:+.2f} FAIL**" + (" (stalls)" if f in d.get("saturates", ()) else "")


def response_table(res: dict) -> list[str]:
    """Spearman's rho per defect (rows) and figure (columns), with its verdict."""
    figs = list(res["clean"])
    lines = ["| defect | " + " | ".join(_SHORT.get(f, f) for f in figs) + " |",
             "|---|" + "---|" * len(figs)]
    for defect, d in res["defects"].items():
        lines.append(f"| {_SHORT.get(defect, defect)} | "
                     + " | ".join(_cell(d, f) for f in figs) + " |")
    return lines


def values_table(res: dict) -> list[str]:
    """Each figure on the clean set and at the five severities of each defect."""
    figs = list(res["clean"])
    lines = ["| defect | severity | " + " | ".join(_SHORT.get(f, f) for f in figs) + " |",
             "|---|---|" + "---|" * len(figs),
             "| clean | 0 | " + " | ".join(_fmt(res["clean"][f]) for f in figs) + " |"]
    for defect, d in res["defects"].items():
        for i, level in enumerate(d["levels"]):
            lines.append(f"| {_SHORT.get(defect, defect)} | {level:g} | "
                         + " | ".join(_fmt(d["values"][f][i]) for f in figs) + " |")
    return lines


def n_table(n_card: dict) -> list[str]:
    """The relative half-width of each figure's 95% interval at each N, and the N needed."""
    grid = [str(g) for g in n_card["grid"]]
    lines = ["| figure | " + " | ".join(f"N={g}" for g in grid) + " | N for 5% |",
             "|---|" + "---|" * (len(grid) + 1)]
    for f, widths in n_card["halfwidth"].items():
        need = n_card["n"][f]
        lines.append(f"| {f} | " + " | ".join(f"{widths[g]:.1%}" for g in grid)
                     + f" | {need if need is not None else '> ' + grid[-1]} |")
    return lines


def markdown(card: dict, figure: str | None = None) -> str:
    """The card as Markdown."""
    base = card["responses"].get("baseline")
    fails = card["failures"]
    lines = [
        f"# Validity card: {card['extractor']}", "",
        f"Extractor `{card['extractor']}` (weights sha256 `{card['extractor_weights_sha256']}`) "
        f"on {card.get('dataset', 'the given images')} {card.get('split', '')}: "
        f"{card['n_reference']} held-out images as the reference, sets of "
        f"{card['n_generated']} drawn from the other {card['n_pool']}; the copycat and "
        f"the memorization check use {card['n_train']} training images; classes to drop: "
        f"{card['classes']}; seed {card['seed']}.", "",
        "## How each figure responds to graded defects", "",
        f"Spearman's rho between severity (1..5) and the figure. `ok`: it moves the "
        f"expected way with |rho| >= {card['rho_pass']}; **FAIL**: it does not (`stalls`: "
        "it never moves the wrong way but stops moving, e.g. at its floor, so the "
        "severities past that point cannot be told apart); "
        "(in brackets): no direction expected (precision and density measure fidelity, "
        "so real images with classes missing need not lower them; the quality figures "
        "are not expected to see a copycat, the memorization check is). FID and KID "
        "should rise, precision, recall, density and coverage fall, the memorization "
        "ratio fall and near copies rise with the copycat.", "",
        *response_table(card["responses"]["extractor"]), "",
    ]
    if figure:
        lines += [f"![each figure against severity]({figure})", ""]
    if base:
        lines += [f"### Baseline: {card['baseline']}", "",
                  "The same sets through a randomly initialised network of the same "
                  f"architecture (weights sha256 `{card['baseline_weights_sha256'][:12]}`): "
                  "what training the extractor added.", "",
                  *response_table(base), ""]
    lines += ["## Verdict", ""]
    stalls = {(w, d, f) for w, res in card["responses"].items()
              for d, row in res["defects"].items() for f in row.get("saturates", ())}
    lines += [f"- **{w}**: {f} does not respond to {d} as expected (rho {r:+.2f}"
              + ("; it stalls" if (w, d, f) in stalls else "") + ")"
              for w, d, f, r in fails] or ["- every figure responds as expected"]
    for who, c in card["copycat"].items():
        lines.append(f"- {who}: the memorization check {'flags' if c['flagged'] else 'MISSES'} "
                     f"the full copycat (near copies {c['near_copies']:.1%}; flagged at "
                     f">= {card['copy_flag']:.0%})")
    nc = card["n_for_interval"]
    lines += ["", f"## N for a 95% interval within {card['within']:.0%} of the figure", "",
              f"On {nc['set']}, {nc['draws']} bootstrap draws of the generated side (the "
              "reference fixed): the interval's half-width relative to the figure.", "",
              *n_table(nc), "", "## The figures", "",
              *values_table(card["responses"]["extractor"]), ""]
    if base:
        lines += [f"### {card['baseline']}", "", *values_table(base), ""]
    return "\n".join(lines)


def save_figure(card: dict, path: Path) -> Path:
    """Each figure against severity, one panel per defect, scaled to its clean value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    res = card["responses"]["extractor"]
    defects = list(res["defects"])
    fig = Figure(figsize=(3.0 * len(defects), 3.2), layout="constrained")
    axes = fig.subplots(1, len(defects), sharey=False)
    for ax, defect in zip(axes, defects, strict=True):
        d = res["defects"][defect]
        for f, vals in d["values"].items():
            ys = [res["clean"][f], *vals]
            top = max(abs(v) for v in ys) or 1.0
            ax.plot(range(len(ys)), [v / top for v in ys], marker="o", ms=3,
                    ls="-" if d["verdict"][f] != "fail" else "--",
                    label=_SHORT.get(f, f))
        ax.set_title(_SHORT.get(defect, defect))
        ax.set_xlabel("severity")
    axes[0].set_ylabel("figure / its largest |value|")
    axes[-1].legend(fontsize=6, loc="best")
    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    return path


def find_card(name: str, sha256: str | None, places: list[Path] | None = None
              ) -> Path | None:
    """The ``card.md`` of extractor ``name`` whose card records weights ``sha256`` (any
    when None), in ``places`` (default: the committed cards, ``REPO_CARDS/<name>``)."""
    for place in places if places is not None else [REPO_CARDS / name]:
        try:
            card = json.loads((Path(place) / CARD_JSON).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(card, dict) and card.get("extractor") == name and (
                sha256 is None or card.get("extractor_weights_sha256") == sha256) \
                and (Path(place) / CARD_MD).is_file():
            return Path(place) / CARD_MD
    return None


def failing(card_md: Path) -> list[str]:
    """``<figure> under <defect>`` of each check the extractor (not its baseline) fails, from
    the ``card.json`` beside ``card_md``."""
    card = json.loads((Path(card_md).parent / CARD_JSON).read_text())
    return [f"{f} under {d}" for who, d, f, _ in card.get("failures", ())
            if who == "extractor"]

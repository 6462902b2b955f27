"""The benchmark harness: suites (TOML), the runner, timing, reports and comparisons.

``zoo bench SUITE --out DIR`` trains and evaluates every dataset x model of a suite and
appends one row per sampler variant to ``DIR/results.jsonl`` (schema: ``zoo.bench.schema``);
``zoo report DIR`` turns the rows into ``results.csv``, ``report.md`` and figures;
``zoo compare BASE NEW`` gates a change on them; ``zoo.bench.results(DIR)`` is the rows
as a pandas DataFrame, ``zoo.bench.curves(DIR)`` the training curves (``curve.jsonl``).
"""

from .frame import curves, results

__all__ = ["curves", "results"]

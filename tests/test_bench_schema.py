"""zoo.bench.schema: rows keyed by canonical sampler options; rows of the older schema join
rows of this one."""

from __future__ import annotations

import json
from pathlib import Path

from zoo.bench import schema
from zoo.bench.compare import compare_dirs

ROOT = Path(__file__).resolve().parents[1]


def test_rows_of_the_older_schema_join_rows_of_this_one(tmp_path):
    """A baseline of the older schema as committed (sampler name plus steps/eta/temperature
    columns) and the same rows rewritten in this schema compare as identical, row for row."""
    base = ROOT / "tests" / "data" / "ci-cpu-980a0a0"
    old = [json.loads(line) for line in (base / "results.jsonl").read_text().splitlines()]
    assert all("sampler_options" not in r for r in old)
    new = []
    for r in old:
        up = schema.upgrade(r)
        new.append({k: v for k, v in up.items() if k not in schema.LEGACY_OPTION_COLUMNS})
    ddim = [r for r in new if r["sampler"] == "ddim"]
    assert ddim and all(r["sampler_options"]["spacing"] == "trailing" for r in ddim)
    out = tmp_path / "new"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in new))
    text, regressed = compare_dirs(base, out)
    assert not regressed, text
    assert f"{len(old)} rows compared" in text and "only" not in text.split("rows compared")[1]

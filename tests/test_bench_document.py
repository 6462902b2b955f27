"""report.html: one self-contained file, built from the same blocks as report.md."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from test_bench_report import (
    DATASET,
    MODEL,
    SUITE,
    curve_points,
    make_rows,
    with_intervals,
    write_curve,
    write_hostile_run,
    write_run,
)

from zoo.bench import document
from zoo.bench.document import Heading, Items, Para, Table
from zoo.bench.report import write_report


class Page(HTMLParser):
    """The parts of an HTML page the tests look at: every tag's attributes, the tables
    (head and body rows, cell text), the scripts, the text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[dict] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._part = None
        self._script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append({"head": [], "body": []})
        elif tag in ("thead", "tbody"):
            self._part = tag
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "script":
            self._script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            t = self.tables[-1]
            if self._part == "thead":
                t["head"] = self._row
            else:
                t["body"].append(self._row)
            self._row = None
        elif tag == "script":
            self._script = False

    def handle_data(self, data):
        if self._script:
            self.scripts[-1] += data
        else:
            self.text.append(data)
            if self._cell is not None:
                self._cell.append(data)


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def md_tables(md: str) -> list[dict]:
    """The tables of report.md, head and body rows, cells unescaped (``\\|`` -> ``|``)."""
    tables, cur = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|")
                     for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if cur is None:
                cur = {"head": cells, "body": []}
                tables.append(cur)
            elif not all(set(c) <= {"-"} for c in cells):
                cur["body"].append(cells)
        else:
            cur = None
    return tables


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A run with intervals, training curves and one grid missing on disk."""
    run = write_run(tmp_path_factory.mktemp("html") / "run", with_intervals(make_rows()))
    write_curve(run, curve_points())
    (run / "suite.toml").write_text('name = "test"\n')
    write_report(run)
    return run


def test_written_beside_report_md(report):
    assert (report / "report.html").is_file() and (report / "report.md").is_file()


def test_every_image_is_an_embedded_png(report):
    page = parse(report / "report.html")
    imgs = [a for t, a in page.tags if t == "img"]
    # figures, the compute curve and every grid on disk (the last row's is missing)
    n_figures = len(list((report / "figures").glob("*.png")))
    assert len(imgs) == n_figures + len(make_rows()) - 1
    for a in imgs:
        src = a["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        assert a.get("alt")


def test_nothing_needs_the_network_or_a_file_beside_it(report):
    page = parse(report / "report.html")
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe", "object", "embed"), tag
        if tag == "script":
            assert "src" not in attrs
        for name in ("src", "href"):
            v = attrs.get(name)
            if v is None:
                continue
            assert not re.match(r"(https?:)?//", v), v
            assert not re.search(r"\.(js|css|woff2?|ttf|otf|eot)(\?|#|$)", v, re.I), v
            if tag == "img":
                assert v.startswith("data:")
    html = (report / "report.html").read_text()
    assert "@import" not in html and "url(" not in html
    # the local links are plain links, to files the content does not depend on
    hrefs = {a["href"] for t, a in page.tags if t == "a"}
    assert {"results.csv", "suite.toml"} <= hrefs
    assert all(h.startswith("#") or h in ("results.csv", "suite.toml") for h in hrefs)


def test_tables_are_the_tables_of_report_md(report):
    md = md_tables((report / "report.md").read_text())
    html = parse(report / "report.html").tables
    assert len(md) == len(html) > 4
    for m, h in zip(md, html, strict=True):
        assert h["head"] == m["head"]
        assert h["body"] == m["body"]
    # the results tables with their intervals, and the ranking with its ties
    cells = {c for t in html for row in t["body"] for c in row}
    assert "8.000 [7.200, 8.800]" in cells and "≈ 1" in cells and "n/a" in cells


def test_the_sort_script_and_sortable_tables(report):
    page = parse(report / "report.html")
    assert len(page.scripts) == 1
    script = page.scripts[0]
    assert "addEventListener" in script and "n/a" in script and "sort" in script
    tables = [a for t, a in page.tags if t == "table"]
    assert tables and all("sortable" in a.get("class", "") for a in tables)


def test_wide_tables_scroll_with_the_model_column_fixed(tmp_path):
    """A table wider than the page scrolls in its own box, its first (model) column and
    that column's header held at the left edge, above the cells scrolled under them."""
    head = ["model", *(f"a long column name {i}" for i in range(40))]
    page = document.to_html([Table(head, [["ddpm · ddim, 50 steps", *["17.78"] * 40]])],
                            tmp_path, "wide")
    assert re.search(r'<div class="scroll"><table class="sortable"><thead><tr><th>model</th>',
                     page)
    rules = {" ".join(sel.split()): body for sel, body in
             re.findall(r"([^{}]+)\{([^}]*)\}", document.STYLE)}
    assert "overflow-x: auto" in rules[".scroll"]
    for sel in ("thead th:first-child", "tbody td:first-child"):
        assert "position: sticky" in rules[sel] and "left: 0" in rules[sel], sel
        assert re.search(r"z-index: [1-9]", rules[sel]), sel
    assert "background" in rules["th"]  # the fixed header cell hides what scrolls under it


def test_a_missing_grid_is_a_note(report):
    missing = make_rows()[-1]["grid"]
    text = "".join(parse(report / "report.html").text)
    assert f"grid {missing} is missing" in text


def test_a_missing_image_file_is_a_note_not_a_broken_image(tmp_path):
    html = document.to_html([Heading(1, "r"), document.Image("a grid", "grids/none.png")],
                            tmp_path, "r")
    page = Page()
    page.feed(html)
    assert not [a for t, a in page.tags if t == "img"]
    assert "a grid: image grids/none.png is missing" in "".join(page.text)


def test_inline_markdown():
    assert document.inline("**ddpm**: `zoo bench` [`results.csv`](results.csv) ≤ 1 & <x>") == (
        '<strong>ddpm</strong>: <code>zoo bench</code> '
        '<a href="results.csv"><code>results.csv</code></a> ≤ 1 &amp; &lt;x&gt;')


def test_the_markdown_renderer():
    blocks = [Heading(2, "A"), Para("text"), Table(["x", "y"], [["1", "a|b"]]),
              Items([(0, "one"), (1, "sub"), (0, "two")])]
    assert document.to_markdown(blocks) == (
        "## A\n\ntext\n\n| x | y |\n|---|---|\n| 1 | a\\|b |\n\n- one\n  - sub\n- two\n")
    html = document.to_html(blocks, Path("."), "t")
    assert "<ul><li>one<ul><li>sub</li></ul></li><li>two</li></ul>" in html


def test_sort_keys_in_node():
    """The sort script's key: a cell sorts by the number it starts with, else by its text;
    an empty or n/a cell has no key (sorted last). Run in node."""
    import json
    import shutil
    import subprocess

    node = shutil.which("node")
    assert node is not None, "the sort script is checked in node (on the CI machine's PATH)"
    cells = ["17.78 [16.85, 18.59]", "n/a", "1,000", "2.10M", "820.0k", "≤ 1.300 ± 0.004",
             "≈ 1", "3.2e+09", "12.5%", "ddim, 10 steps", "4.75x", "", "-3"]
    key = document.SCRIPT.split("document.querySelectorAll")[0].replace("(function () {", "")
    out = subprocess.run([node, "-e", key + f"console.log(JSON.stringify({json.dumps(cells)}"
                          ".map(key)));"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [
        [0, 17.78], None, [0, 1000], [0, 2.1e6], [0, 820000], [0, 1.3], [0, 1], [0, 3.2e9],
        [0, 12.5], [1, "ddim, 10 steps"], [0, 4.75], None, [0, -3]]


def test_zoo_report_writes_it(tmp_path, capsys):
    from zoo.cli import main

    run = write_run(tmp_path / "run", make_rows(), losses=False)
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert parse(run / "report.html").tables


@pytest.mark.parametrize("href", [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)",
    "java\tscript:alert(1)", "&#106;avascript:alert(1)", "javascript&colon;alert(1)",
    "java\\script:alert(1)", "javascript\\:alert(1)", "data:text/html,x", "vbscript:x",
    "file:///etc/passwd"])
def test_a_link_to_another_scheme_is_text(href):
    text = f"see [here]({href}) now"
    assert "<a" not in document.inline(text)
    assert "[here]" in document.inline(text) and "here" in document.plain(text)
    assert document.md_inline(text).startswith("see \\[here\\](")


@pytest.mark.parametrize("href", ["https://example.org/x", "http://a.b", "mailto:a@b.c",
                                  "suite.toml", "figures/a.png", "#summary", "../x.csv"])
def test_links_to_http_mailto_and_relative_targets_stay(href):
    assert document.inline(f"[a]({href})") == f'<a href="{href}">a</a>'
    assert document.md_inline(f"[a]({href})") == f"[a]({href})"


def test_html_in_markdown_text_is_escaped_and_one_line():
    assert document.md_inline("a <script>x</script> & b\n# c") == \
        "a &lt;script&gt;x&lt;/script&gt; &amp; b # c"
    assert document.md_inline("`<b>`") == "`<b>`"  # code shows as text in Markdown


def test_report_html_shows_hostile_names_as_text(tmp_path):
    run = write_hostile_run(tmp_path / "run")
    page = parse(run / "report.html")
    hrefs = [a.get("href", "") for t, a in page.tags if t == "a"]
    assert hrefs and all(h.startswith("#") or h in ("results.csv",) for h in hrefs), hrefs
    assert len(page.scripts) == 1 and "alert" not in page.scripts[0]
    assert all(set(a) <= {"src", "alt", "class", "width", "height"}
               for t, a in page.tags if t == "img")
    text = "".join(page.text)
    assert SUITE.replace("\n", " ") in text and MODEL in text and DATASET in text

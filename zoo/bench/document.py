"""The report as a list of simple blocks, and the two renderers that write it: Markdown
(``report.md``) and one self-contained HTML file (``report.html``).

``zoo.bench.report`` formats every figure once, into the text of these blocks; the renderers
only lay the text out. Text is Markdown-ish: both renderers understand the few inline
constructs the report writes (``**bold**``, `` `code` ``, ``[text](link)``, backslash
escapes and the character references ``zoo.markup.text`` writes) and escape everything else;
a string from a file or a user enters the text only through ``zoo.markup`` (``text``,
``code``), so it shows as written and never as markup. A link whose target
``zoo.markup.link_allowed`` refuses (``javascript:``, ``data:``, ...) is shown as text.
The HTML page embeds each image as a ``data:image/png;base64`` URI, carries
its own small style sheet and a few lines of plain JavaScript that sort a table by the
column whose header is clicked; it needs no network and no file beside it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..markup import link_allowed


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    head: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    """An image file, ``path`` relative to the report's directory (POSIX)."""

    title: str
    path: str


@dataclass(frozen=True)
class Items:
    """A bulleted list: (depth, text) per item, depth 0 at the top level."""

    items: list[tuple[int, str]]


Block = Heading | Para | Table | Image | Items


# ----------------------------------------------------------------------------- Markdown


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table, ``|`` inside cells escaped."""
    def line(cells):
        return "| " + " | ".join(md_inline(c).replace("|", "\\|") for c in cells) + " |"
    return [line(head), "|" + "---|" * len(head), *(line(cells) for cells in rows)]


def md_lines(block: Block) -> list[str]:
    if isinstance(block, Heading):
        return ["#" * block.level + " " + md_inline(block.text)]
    if isinstance(block, Para):
        return [md_inline(block.text)]
    if isinstance(block, Table):
        return md_table(block.head, block.rows)
    if isinstance(block, Image):
        return [f"![{md_inline(block.title)}]({quote(block.path)})"]
    if isinstance(block, Items):
        return ["  " * depth + "- " + md_inline(text) for depth, text in block.items]
    raise TypeError(f"not a report block: {block!r}")


def to_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown, one blank line between two blocks."""
    lines: list[str] = []
    for b in blocks:
        lines += [*md_lines(b), ""]
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- inline text

_INLINE = re.compile(
    r"\\(?P<esc>[!-/:-@\[-`{-~])"
    r"|&(?P<ent>lt|gt|amp|quot|#39);"
    r"|(?P<tick>`+)(?!`)(?P<code>.+?)(?<!`)(?P=tick)(?!`)"
    r"|\*\*(?P<bold>(?:\\.|[^\\*])+)\*\*"
    r"|\[(?P<ltext>(?:\\.|[^\\\]])+)\]\((?P<href>[^)]*)\)")
_KINDS = ("esc", "ent", "code", "bold", "href")
_MD_TEXT = str.maketrans({"<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ", "\r": " "})


def _tokens(text: str):
    """The inline constructs of Markdown-ish ``text``: (kind, match), kind ``text`` (a str
    in place of a match) for the text between them."""
    pos = 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            yield "text", text[pos:m.start()]
        yield next(k for k in _KINDS if m[k] is not None), m
        pos = m.end()
    if pos < len(text):
        yield "text", text[pos:]


def _code(m) -> str:
    c = m["code"]
    return c[1:-1] if c.startswith(" ") and c.endswith(" ") and c.strip() else c


def _target(href: str) -> str:
    """A link's target as it is meant: backslash escapes and character references resolved."""
    return html.unescape(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", href)).strip()


def inline(text: str) -> str:
    """Markdown-ish text as HTML: `` `code` ``, ``**bold**`` and ``[text](link)`` (a link
    only where ``link_allowed``, else its text); all else escaped."""
    out = []
    for kind, m in _tokens(text):
        if kind == "text":
            out.append(html.escape(m))
        elif kind == "esc":
            out.append(html.escape(m["esc"]))
        elif kind == "ent":
            out.append(m[0])
        elif kind == "code":
            out.append(f"<code>{html.escape(_code(m))}</code>")
        elif kind == "bold":
            out.append(f"<strong>{inline(m['bold'])}</strong>")
        elif link_allowed(m["href"]):
            out.append(f'<a href="{html.escape(_target(m["href"]))}">{inline(m["ltext"])}</a>')
        else:
            out.append(f"[{inline(m['ltext'])}]({html.escape(m['href'])})")
    return "".join(out)


def md_inline(text: str) -> str:
    """Markdown-ish text as Markdown: on one line, ``<``, ``>`` and ``&`` outside code as
    character references (a viewer that renders HTML shows them as text), and a link only
    where ``link_allowed`` (else its brackets escaped: text)."""
    out = []
    for kind, m in _tokens(text):
        if kind == "text":
            out.append(m.translate(_MD_TEXT))
        elif kind == "esc":
            ch = m["esc"]
            out.append(ch.translate(_MD_TEXT) if ch in "<>&" else m[0])
        elif kind in ("ent", "code"):
            out.append(m[0].translate({10: " ", 13: " "}))
        elif kind == "bold":
            out.append(f"**{md_inline(m['bold'])}**")
        elif link_allowed(m["href"]):
            out.append(f"[{md_inline(m['ltext'])}]({m['href']})")
        else:
            out.append(f"\\[{md_inline(m['ltext'])}\\]({m['href'].translate(_MD_TEXT)})")
    return "".join(out)


def plain(text: str) -> str:
    """Markdown-ish text as the plain text it shows (an image's alt text, the page title)."""
    out = []
    for kind, m in _tokens(text):
        if kind == "text":
            out.append(m)
        elif kind == "esc":
            out.append(m["esc"])
        elif kind == "ent":
            out.append(html.unescape(m[0]))
        elif kind == "code":
            out.append(_code(m))
        else:
            out.append(plain(m["bold"] if kind == "bold" else m["ltext"]))
    return "".join(out)


# ----------------------------------------------------------------------------- HTML


def slug(text: str, seen: dict[str, int]) -> str:
    """An id for a heading, unique within the page."""
    base = re.sub(r"[^a-z0-9]+", "-", plain(text).lower()).strip("-") or "section"
    n = seen.get(base, 0)
    seen[base] = n + 1
    return base if n == 0 else f"{base}-{n + 1}"


def data_uri(path: Path) -> str | None:
    """``path`` as a ``data:image/png;base64`` URI; None when it is not a readable PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


STYLE = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1b1f24; background: #fff; margin: 0 auto; padding: 1.5em 2em 4em; max-width: 1800px; }
h1 { font-size: 1.7em; margin: 0 0 .6em; }
h2 { font-size: 1.35em; margin: 2em 0 .5em; padding-bottom: .2em;
  border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.1em; margin: 1.5em 0 .4em; }
p, ul { margin: .5em 0; max-width: 75em; }
code { font: .9em ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  background: #f2f4f7; padding: .05em .3em; border-radius: 3px; }
a { color: #0b5cad; }
nav { font-size: .92em; margin: .5em 0 1.5em; }
nav a { margin-right: 1em; white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; margin: .6em 0 1em; }
table { border-collapse: collapse; font-size: .88em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25em .5em; text-align: left; vertical-align: top; }
td { white-space: nowrap; }
td .ci { display: block; color: #4a5563; font-size: .92em; }
th { background: #f2f4f7; cursor: pointer; user-select: none; min-width: 3em; }
th:hover { background: #e4e8ee; }
th[aria-sort=ascending]::after { content: " \\25B2"; font-size: .75em; }
th[aria-sort=descending]::after { content: " \\25BC"; font-size: .75em; }
tbody tr:nth-child(even) td { background: #f8f9fb; }
tbody td:first-child { position: sticky; left: 0; z-index: 1; background: #fff; }
thead th:first-child { position: sticky; left: 0; z-index: 2; }
figure { margin: .6em 0 1.2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e8ee; }
figure img.small { image-rendering: pixelated; }
figcaption { font-size: .88em; color: #4a5563; }
.missing { color: #8a1c1c; background: #fdf1f1; border: 1px dashed #d9a0a0; padding: .3em .6em;
  display: inline-block; }
"""

# Click a header to sort its table by that column (again to reverse). A cell sorts by the
# number it starts with ("17.78 [16.85, 18.59]" by 17.78, "1,000" by 1000, "2.10M" by
# 2.1e6, "≤ 1.300" by 1.3), else by its text; an empty or n/a cell sorts last either way.
SCRIPT = r"""
(function () {
  var MULT = {k: 1e3, M: 1e6, G: 1e9, B: 1e9};
  function key(text) {
    var t = text.trim();
    if (t === "" || t === "n/a") return null;
    var m = /^[≤≥≈<>~\s]*([-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)([kMGBx])?(?![\w.,])/.exec(t);
    if (m) return [0, parseFloat(m[1].replace(/,/g, "")) * (MULT[m[2]] || 1)];
    return [1, t.toLowerCase()];
  }
  function compare(a, b) {
    if (a[0] !== b[0]) return a[0] - b[0];
    return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var ths = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths, function (th, col) {
      th.title = "sort by this column";
      th.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        Array.prototype.forEach.call(ths, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.map.call(body.rows, function (r, i) {
          return {row: r, i: i, k: key(r.cells[col] ? r.cells[col].textContent : "")};
        });
        rows.sort(function (a, b) {
          if (a.k === null || b.k === null) {
            return a.k === b.k ? a.i - b.i : (a.k === null ? 1 : -1);
          }
          return dir * compare(a.k, b.k) || a.i - b.i;
        });
        rows.forEach(function (r) { body.appendChild(r.row); });
      });
    });
  });
})();
"""


def _image(block: Image, base: Path, caption: bool = True) -> str:
    uri = data_uri(base / block.path)
    if uri is None:
        return (f'<p class="missing">{inline(block.title)}: image '
                f"<code>{html.escape(block.path)}</code> is missing</p>")
    size = ""
    try:
        from PIL import Image as PILImage

        with PILImage.open(base / block.path) as im:
            w, h = im.size
        if max(w, h) < 400:  # a grid of small images: shown twice its size, sharp
            size = f' class="small" width="{2 * w}" height="{2 * h}"'
    except Exception:  # noqa: BLE001 - only a size hint; the image is embedded regardless
        pass
    cap = f"<figcaption>{inline(block.title)}</figcaption>" if caption else ""
    return f'<figure><img{size} src="{uri}" alt="{html.escape(plain(block.title))}">{cap}</figure>'


_INTERVAL = re.compile(r"(.*[^\s\\]) (\[[^\]\\]+\])")


def _cell(text: str) -> str:
    """A table cell; a figure's interval (``17.78 [16.85, 18.59]``) on a line of its own,
    so that wide tables of intervals fit the page."""
    m = _INTERVAL.fullmatch(text)
    if m is None:
        return inline(text)
    return f'{inline(m[1])} <span class="ci">{inline(m[2])}</span>'


def html_block(block: Block, base: Path, ids: dict[str, int], caption: bool = True) -> str:
    """One block as HTML; ``caption``: give an image its title under it."""
    if isinstance(block, Heading):
        level = min(max(block.level, 1), 6)
        return f'<h{level} id="{slug(block.text, ids)}">{inline(block.text)}</h{level}>'
    if isinstance(block, Para):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Table):
        head = "".join(f"<th>{inline(h)}</th>" for h in block.head)
        body = "\n".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>"
                         for cells in block.rows)
        return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
                f"\n<tbody>\n{body}\n</tbody></table></div>")
    if isinstance(block, Image):
        return _image(block, base, caption)
    if isinstance(block, Items):
        out, depth = [], -1
        for d, text in block.items:
            if d > depth:
                out += ["<ul><li>"] * (d - depth)
            else:
                out.append("</li></ul>" * (depth - d) + "</li><li>")
            out.append(inline(text))
            depth = d
        out.append("</li></ul>" * (depth + 1))
        return "".join(out)
    raise TypeError(f"not a report block: {block!r}")


def to_html(blocks: list[Block], base: Path, title: str) -> str:
    """The blocks as one self-contained HTML page; images read from ``base`` and embedded.
    A table of contents of the level-2 headings follows the first heading."""
    ids: dict[str, int] = {}
    # an image's caption is left out where the block before it says the same
    parts = [html_block(b, base, ids, caption=not (
        i and isinstance(b, Image) and getattr(blocks[i - 1], "text", None) == b.title))
        for i, b in enumerate(blocks)]
    toc_ids: dict[str, int] = {}
    toc = []
    for b in blocks:  # the same ids, in the same order, as html_block gave them
        if isinstance(b, Heading):
            anchor = slug(b.text, toc_ids)
            if b.level == 2:
                toc.append(f'<a href="#{anchor}">{inline(b.text)}</a>')
    if toc:
        at = next((i + 1 for i, b in enumerate(blocks) if isinstance(b, Heading)), 0)
        parts.insert(at, "<nav>" + " ".join(toc) + "</nav>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(plain(title))}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(parts)
            + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n")

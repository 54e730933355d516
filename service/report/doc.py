"""The report's two renderings built side by side: every heading, paragraph, table and figure
goes into the HTML page (one embedded stylesheet, images inline) and the Markdown file
(figures in report_files/) at once, from the same already-formatted text."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from service.results.store import write_bytes

FILES = "report_files"
# A cell that is a number as the report writes it (96.4%, −0.5 pts [−0.9, +0.1], 28.6 M,
# 617,992, <0.001, 3/6, ± 1.3 pts): right-aligned in the HTML.
NUMERIC = re.compile(r"^([<≥±+−\-–—\s]*\d[\d,.]*(e−?\d+)?\s*(%|pts|[kMG])?"
                     r"(\s*\[[^\]]*\])?(/\d+)?|\[[−+\d., ]+\])$")


def slug(text: str, taken: set[str]) -> str:
    """GitHub's anchor for a heading (lowercase, punctuation dropped, spaces as hyphens; a
    repeated one gets -1, -2), so that report.md's contents links work where it is shown."""
    base = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    anchor, i = base, 0
    while anchor in taken:
        i += 1
        anchor = f"{base}-{i}"
    taken.add(anchor)
    return anchor


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class Doc:
    """Builds the HTML and Markdown versions side by side, so they always say the same."""

    def __init__(self, out_dir: Path):
        self.blocks: list[list[str]] = []  # [html, md] per block, in page order
        self.headings: list[tuple[int, str, str]] = []  # (level, text, anchor)
        self.files = out_dir / FILES
        self.files.mkdir(parents=True, exist_ok=True)
        self._anchors: set[str] = set()
        self._figures = 0
        self._toc: int | None = None

    @property
    def html(self) -> list[str]:
        """The HTML blocks so far."""
        return [b[0] for b in self.blocks]

    @property
    def md(self) -> list[str]:
        """The Markdown blocks so far."""
        return [b[1] for b in self.blocks]

    def heading(self, text: str, level: int = 2) -> str:
        """A heading of `level` (1 is the page title); returns its anchor."""
        anchor = slug(text, self._anchors)
        self.headings.append((level, text, anchor))
        self.blocks.append([f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>',
                            f"{'#' * level} {text}\n"])
        return anchor

    def para(self, text: str, css: str | None = None) -> None:
        """A paragraph of plain text."""
        cls = f' class="{css}"' if css else ""
        self.blocks.append([f"<p{cls}>{html.escape(text)}</p>", f"{text}\n"])

    def slot(self) -> int:
        """A place for paragraphs written later (the findings, from every section's numbers)."""
        self.blocks.append(["", ""])
        return len(self.blocks) - 1

    def fill(self, slot: int, paragraphs: list[str], css: str | None = None) -> None:
        """Write `paragraphs` into `slot`."""
        cls = f' class="{css}"' if css else ""
        self.blocks[slot] = ["".join(f"<p{cls}>{html.escape(p)}</p>" for p in paragraphs),
                             "".join(f"{p}\n\n" for p in paragraphs).rstrip("\n") + "\n"]

    def contents(self) -> None:
        """The table of contents of the sections (level 2, with their level-3 parts), written
        where this is called once every heading is known."""
        self._toc = len(self.blocks)
        self.blocks.append(["", ""])

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        """A table of already-formatted cells; number columns are right-aligned."""
        cells = [["" if c is None else str(c) for c in r] for r in rows]
        numeric = [bool(col) and all(NUMERIC.match(c) or c in ("", "—") for c in col)
                   and any(NUMERIC.match(c) for c in col)
                   for col in (list(x) for x in zip(*cells, strict=True))] if cells else []
        numeric = numeric or [False] * len(head)

        def td(i: int, c: str) -> str:
            return f'<td class="num">{html.escape(c)}</td>' if numeric[i] else \
                f"<td>{html.escape(c)}</td>"

        ths = "".join(f'<th{" class=num" if numeric[i] else ""}>{html.escape(h)}</th>'
                      for i, h in enumerate(head))
        body = "".join("<tr>" + "".join(td(i, c) for i, c in enumerate(r)) + "</tr>"
                       for r in cells)
        self.blocks.append([
            f'<div class="scroll"><table><thead><tr>{ths}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>",
            "| " + " | ".join(map(_md_cell, head)) + " |\n|"
            + "".join(" ---: |" if n else " --- |" for n in numeric) + "\n"
            + "".join("| " + " | ".join(map(_md_cell, r)) + " |\n" for r in cells)])

    def code(self, text: str) -> None:
        """A block of code (YAML, commands), verbatim."""
        self.blocks.append([f"<pre><code>{html.escape(text)}</code></pre>", f"```\n{text}\n```\n"])

    def image(self, name: str, png: bytes, alt: str) -> None:
        """A numbered figure: embedded in the HTML, written to report_files/ for the Markdown;
        `alt`, a sentence saying what it shows, is both its alt text and its caption."""
        if not alt.strip():
            raise ValueError(f"{name}: a figure needs a sentence of alt text")
        self._figures += 1
        write_bytes(self.files / name, png)
        data = base64.b64encode(png).decode()
        caption = f"Figure {self._figures}. {alt}"
        self.blocks.append([
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>",
            f"![{alt}]({FILES}/{name})\n\n*{caption}*\n"])

    def _toc_blocks(self) -> list[str]:
        items: list[tuple[int, str, str]] = [h for h in self.headings if h[0] in (2, 3)]
        out_html, out_md, open_sub = ['<nav class="toc"><h2>Contents</h2><ol>'], [], False
        for i, (level, text, anchor) in enumerate(items):
            link = f'<a href="#{anchor}">{html.escape(text)}</a>'
            if level == 2:
                if open_sub:
                    out_html.append("</ol></li>")
                    open_sub = False
                elif i:
                    out_html.append("</li>")
                out_html.append(f"<li>{link}")
                out_md.append(f"- [{text}](#{anchor})")
            else:
                if not open_sub:
                    out_html.append("<ol>")
                    open_sub = True
                out_html.append(f"<li>{link}</li>")
                out_md.append(f"  - [{text}](#{anchor})")
        out_html.append("</ol></li></ol></nav>" if open_sub else "</li></ol></nav>")
        return ["".join(out_html), "## Contents\n\n" + "\n".join(out_md) + "\n"]

    def page(self, title: str) -> str:
        """The standalone HTML page."""
        blocks = list(self.html)
        if self._toc is not None:
            blocks[self._toc] = self._toc_blocks()[0]
        return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{html.escape(title)}</title><style>{STYLE}</style>{CHECK}</head>"
                f"<body><main>{''.join(blocks)}</main></body></html>")

    def markdown(self) -> str:
        """report.md."""
        blocks = list(self.md)
        if self._toc is not None:
            blocks[self._toc] = self._toc_blocks()[1]
        return "\n".join(b for b in blocks if b)


STYLE = """
:root{--ink:#1d2330;--muted:#5b6475;--rule:#d8dce3;--zebra:#f6f7f9;--accent:#2b5fad}
*{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--ink);
 font:15px/1.55 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1080px;margin:0 auto;padding:28px 32px 64px}
h1{font-size:26px;margin:0 0 6px;line-height:1.25}
h2{font-size:20px;margin:34px 0 10px;padding-top:12px;border-top:2px solid var(--rule)}
h3{font-size:16px;margin:24px 0 8px}
p{max-width:78ch;margin:8px 0}
p.meta{color:var(--muted);font-size:14px}
p.findings{max-width:none;background:#f2f6fc;border-left:4px solid var(--accent);
 padding:12px 16px;margin:6px 0}
nav.toc{margin:18px 0;padding:10px 16px;border:1px solid var(--rule);border-radius:4px;
 font-size:14px;columns:2 260px}
nav.toc h2{border:0;margin:0 0 4px;padding:0;font-size:15px;column-span:all}
nav.toc ol{margin:0;padding-left:20px}nav.toc a{color:var(--accent);text-decoration:none}
nav.toc>ol>li{break-inside:avoid}nav.toc ol ol{padding-left:0;margin:0 0 2px}
nav.toc ol ol li{display:inline;font-size:13px}
nav.toc ol ol li+li:before{content:" · ";color:var(--muted)}
nav.toc a:hover{text-decoration:underline}
.scroll{overflow-x:auto;margin:12px 0}
table{border-collapse:collapse;font-size:13px;border-top:2px solid var(--ink);
 border-bottom:2px solid var(--ink)}
thead th{border-bottom:1px solid var(--ink);font-weight:600;text-align:left;
 vertical-align:bottom;padding:5px 10px;white-space:nowrap}
td{padding:4px 10px;border-bottom:1px solid #eceef2;vertical-align:top}
tbody tr:nth-child(even){background:var(--zebra)}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
pre{background:var(--zebra);border:1px solid var(--rule);padding:10px 12px;
 white-space:pre-wrap;overflow-wrap:anywhere;font-size:12.5px}
figure{margin:16px 0 22px}
img{max-width:100%;height:auto;display:block}
figcaption{color:var(--muted);font-size:13px;max-width:78ch;margin-top:4px}
"""
# Lets a headless browser (and a person's console) confirm that every image decoded and every
# contents link has its heading.
CHECK = """<script>window.addEventListener('load',function(){var i=document.images,ok=0;
for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)ok++;}
var a=document.querySelectorAll('nav.toc a'),found=0;
for(var j=0;j<a.length;j++){if(document.getElementById(a[j].hash.slice(1)))found++;}
var b=document.body;b.setAttribute('data-images',i.length);
b.setAttribute('data-images-loaded',ok);b.setAttribute('data-anchors',a.length);
b.setAttribute('data-anchors-resolved',found);});</script>"""

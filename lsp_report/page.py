"""The report page: sections of text, tables and inlined images, written as one HTML file.

Everything the page shows is inside the file (images as base64 ``data:`` URIs, the style
sheet inline), so it opens offline and can be mailed or attached to an issue. Plots are
matplotlib figures made without pyplot (no global state, no display needed).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lsp_prep.dataset.writer import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_DPI = 100
"""Pixels per inch of the inlined plots (a 10 x 3 inch figure is 1000 x 300 pixels)."""

JPEG_QUALITY = 85
"""Quality of inlined photos (contact sheets, crops, candidates)."""


@dataclass
class Section:
    """One part of the page: a heading, its anchor, and HTML blocks in order."""

    title: str
    anchor: str
    blocks: list[str] = field(default_factory=list)

    def text(self, message: str, *, css: str = "") -> Section:
        cls = f' class="{css}"' if css else ""
        self.blocks.append(f"<p{cls}>{html.escape(message)}</p>")
        return self

    def image(self, uri: str, *, alt: str, caption: str = "") -> Section:
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.blocks.append(f'<figure><img src="{uri}" alt="{html.escape(alt)}">{cap}</figure>')
        return self

    def table(self, rows: Sequence[Sequence[Any]], *, header: Sequence[str] = ()) -> Section:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        self.blocks.append(
            f"<table>{f'<thead><tr>{head}</tr></thead>' if head else ''}<tbody>{body}</tbody>"
            "</table>"
        )
        return self

    def items(self, entries: Sequence[tuple[str, str]], *, css: str = "") -> Section:
        """A list of (headline, detail) pairs."""
        lis = "".join(
            f"<li><b>{html.escape(a)}</b><br><span>{html.escape(b)}</span></li>" for a, b in entries
        )
        self.blocks.append(f'<ul class="{css}">{lis}</ul>')
        return self

    def details(self, summary: str, text: str) -> Section:
        self.blocks.append(
            f"<details><summary>{html.escape(summary)}</summary>"
            f"<pre>{html.escape(text)}</pre></details>"
        )
        return self

    def raw(self, block: str) -> Section:
        self.blocks.append(block)
        return self


def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits, NaN as a dash."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "-" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def png_uri(fig: Figure, *, dpi: int = PLOT_DPI) -> str:
    """A matplotlib figure as a base64 PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def jpeg_uri(image: np.ndarray, *, quality: int = JPEG_QUALITY) -> str:
    """An RGB image (H, W, 3) uint8 as a base64 JPEG data URI."""
    import cv2

    ok, data = cv2.imencode(
        ".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError(f"could not encode an image of shape {image.shape} as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode()


def jpeg_bytes_uri(data: bytes) -> str:
    """JPEG file bytes as a base64 data URI (no re-encoding)."""
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


STYLE = """
:root { --ink:#1d2430; --muted:#5b6472; --line:#e3e7ee; --accent:#2f6fde; --warn:#b35900;
        --bg:#f6f8fb; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color:var(--ink); background:var(--bg); }
header { background:#17202e; color:#fff; padding:22px 32px 16px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header p { margin:0; color:#b9c3d3; font-size:13px; }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line);
      padding:8px 32px; font-size:13px; overflow-x:auto; white-space:nowrap; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; }
main { max-width:1180px; margin:0 auto; padding:8px 24px 48px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; margin:18px 0;
          padding:6px 22px 16px; }
h2 { font-size:18px; margin:14px 0 8px; }
figure { margin:10px 0; }
img { max-width:100%; height:auto; display:block; border-radius:4px; }
figcaption, .muted { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; margin:8px 0; font-size:13.5px; }
td, th { border-bottom:1px solid var(--line); padding:4px 14px 4px 0; text-align:left;
         vertical-align:top; }
th { color:var(--muted); font-weight:600; }
ul.warnings { padding-left:18px; }
ul.warnings li { margin:6px 0; }
ul.warnings b { color:var(--warn); font-weight:600; }
.ok { color:#1b7f3b; }
.bad { color:var(--warn); font-weight:600; }
details pre { font-size:12px; background:var(--bg); padding:10px; overflow-x:auto; }
.kpis { display:flex; flex-wrap:wrap; gap:10px; margin:10px 0; }
.kpi { border:1px solid var(--line); border-radius:6px; padding:6px 12px; min-width:120px; }
.kpi b { display:block; font-size:18px; }
.kpi span { color:var(--muted); font-size:12px; }
"""


def kpis(values: Sequence[tuple[str, str]]) -> str:
    """A row of headline numbers: (value, label) pairs."""
    cells = "".join(
        f'<div class="kpi"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>'
        for v, k in values
    )
    return f'<div class="kpis">{cells}</div>'


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole HTML document."""
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.blocks)}</section>'
        for s in sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )


def write_page(path: Path, document: str) -> Path:
    """Write the page atomically (a crash never leaves a half page under ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return path

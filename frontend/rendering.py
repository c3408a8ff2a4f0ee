"""Server-side rendering of untrusted markdown (prompts, model responses, guidelines).

Two independent layers, so a bug in one is not an XSS:

1. markdown-it-py with raw HTML disabled: ``<script>`` in the source becomes text.
   Its link validator already refuses ``javascript:``/``vbscript:``/``file:``/``data:``.
2. nh3 (ammonia) with an explicit allow-list of tags, attributes, classes and URL
   schemes (http, https, mailto), run on markdown-it's output.

Code blocks are highlighted by Pygments with CSS classes only (the page's CSP has no
``'unsafe-inline'``, so inline ``style`` attributes would be ignored anyway); the theme
lives in ``frontend/static/frontend/app.css``.
"""

from __future__ import annotations

import re
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

# Inputs larger than this are shown as an escaped <pre> instead of being parsed:
# markdown-it is linear, but Pygments on megabytes of text would stall the request.
MAX_MARKDOWN_CHARS = 200_000
# Highlighting is a nicety; above this a block is shown plain.
MAX_HIGHLIGHT_CHARS = 50_000

ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "s", "span", "strong", "table", "tbody", "td",
    "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
# Pygments' short token class names ("k", "nf", "s2", …) are the only classes spans
# may carry, so content cannot borrow the page's own classes to dress up as UI.
PYGMENTS_CLASSES = {name for name in STANDARD_TYPES.values() if name}
ALLOWED_CLASSES = {"span": PYGMENTS_CLASSES, "th": ALIGN_CLASSES, "td": ALIGN_CLASSES}
URL_SCHEMES = {"http", "https", "mailto"}

_FORMATTER = HtmlFormatter(nowrap=True)
_ALIGN_STYLE = re.compile(r"^text-align:(left|center|right)$")


def _highlight(code: str, lang: str, _attrs: str) -> str:
    """markdown-it's highlight hook: return inner HTML for <pre><code>, or "" to let
    markdown-it escape the block itself."""
    if not lang or len(code) > MAX_HIGHLIGHT_CHARS:
        return ""
    try:
        lexer = get_lexer_by_name(lang.lower(), stripnl=False, ensurenl=False)
    except ClassNotFound:
        return ""
    return highlight(code, lexer, _FORMATTER)


def _table_align_to_class(state: StateCore) -> None:
    """markdown-it writes column alignment as ``style="text-align:…"``, which the CSP
    would block and nh3 strips; turn it into a class the stylesheet knows."""
    for token in state.tokens:
        if token.type not in {"th_open", "td_open"}:
            continue
        style = token.attrGet("style")
        if not isinstance(style, str):
            continue
        match = _ALIGN_STYLE.match(style)
        token.attrs.pop("style", None)
        if match:
            token.attrSet("class", f"align-{match.group(1)}")


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt(
        "commonmark",
        {"html": False, "breaks": True, "linkify": False, "highlight": _highlight},
    )
    md.enable(["table", "strikethrough"])
    # Remote images would let a response phone home (the CSP blocks them anyway); an
    # image is shown as a plain link to it instead.
    md.disable("image")
    md.core.ruler.push("table_align_to_class", _table_align_to_class)
    return md


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        allowed_classes=ALLOWED_CLASSES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener nofollow noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        clean_content_tags={"script", "style"},
        strip_comments=True,
    )


def render_markdown(text: str) -> str:
    """Markdown → sanitised HTML, safe to insert into a page as-is."""
    if not text:
        return ""
    if len(text) > MAX_MARKDOWN_CHARS:
        escaped = nh3.clean_text(text)
        return f"<pre>{escaped}</pre>"
    return sanitize_html(_parser().render(text))


def pygments_css(selector: str = ".md pre") -> str:
    """The highlight theme, for regenerating the block at the end of app.css. Only
    rules under ``selector``: Pygments also emits bare ``pre``/line-number rules that
    would restyle the whole page."""
    defs = HtmlFormatter(style="default").get_style_defs(selector)
    return "\n".join(line for line in defs.splitlines() if line.startswith(selector))

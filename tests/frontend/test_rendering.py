"""render_markdown: markdown features survive, and no payload yields active content."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest

from frontend.rendering import (
    ALLOWED_TAGS,
    MAX_MARKDOWN_CHARS,
    render_markdown,
    sanitize_html,
)
from tests.frontend.xss_corpus import XSS_PAYLOADS

SAFE_SCHEMES = ("http:", "https:", "mailto:")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _elements(output: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Collector()
    parser.feed(output)
    parser.close()
    return parser.tags


def _normalised_url(value: str) -> str:
    # Browsers drop ASCII whitespace/control characters inside a scheme and decode
    # entities before reading it; compare what a browser would see.
    value = html.unescape(value)
    return re.sub(r"[\x00-\x20]", "", value).lower()


def assert_inert(output: str) -> None:
    assert "<script" not in output.lower()
    for tag, attrs in _elements(output):
        assert tag in ALLOWED_TAGS, f"tag <{tag}> escaped the allow-list: {output}"
        for name, value in attrs:
            assert not name.lower().startswith("on"), f"event handler {name}: {output}"
            assert name not in {"style", "src", "srcdoc", "action", "formaction"}
            if name == "href":
                url = _normalised_url(value or "")
                assert url.startswith(SAFE_SCHEMES) or not re.match(
                    r"^[a-z][a-z0-9+.-]*:", url
                ), f"unsafe href {value!r}"
                assert "javascript:" not in url and "data:" not in url
            if name == "class":
                assert "overlay" not in (value or "")


@pytest.mark.parametrize("payload", XSS_PAYLOADS, ids=range(len(XSS_PAYLOADS)))
def test_xss_payload_is_inert(payload: str) -> None:
    assert_inert(render_markdown(payload))
    # Also embedded in ordinary prose and inside a list item.
    assert_inert(render_markdown(f"Here is text.\n\n{payload}\n\nMore text."))
    assert_inert(render_markdown(f"- item\n- {payload}"))


def test_corpus_is_large_enough() -> None:
    assert len(XSS_PAYLOADS) >= 20


def test_raw_html_is_shown_as_text() -> None:
    out = render_markdown("<script>alert(1)</script>")
    assert "&lt;script&gt;" in out


def test_javascript_link_is_not_a_link() -> None:
    out = render_markdown("[x](javascript:alert(1)) and [y](JAVASCRIPT:alert(1))")
    assert "<a" not in out


def test_safe_links_get_rel_and_target() -> None:
    out = render_markdown("[site](https://example.com/a?b=1) <mailto:a@b.example>")
    assert 'href="https://example.com/a?b=1"' in out
    assert 'rel="noopener nofollow noreferrer"' in out
    assert 'target="_blank"' in out
    assert 'href="mailto:a@b.example"' in out


def test_images_become_links() -> None:
    out = render_markdown("![chart](https://example.com/c.png)")
    assert "<img" not in out
    assert 'href="https://example.com/c.png"' in out


def test_code_block_is_highlighted_with_classes_only() -> None:
    out = render_markdown("```python\ndef f(x):\n    return x < 1\n```")
    assert "<pre><code>" in out
    assert '<span class="k">def</span>' in out
    assert "&lt;" in out
    assert "style=" not in out


def test_unknown_language_is_plain_escaped() -> None:
    out = render_markdown("```nosuchlang\n<b>x</b>\n```")
    assert "&lt;b&gt;x&lt;/b&gt;" in out
    assert "<span" not in out


def test_lists_tables_emphasis() -> None:
    out = render_markdown(
        "1. one\n2. **two**\n\n- a\n- ~~b~~\n\n| h | i |\n|:--|:-:|\n| 1 | 2 |"
    )
    for fragment in ("<ol>", "<strong>two</strong>", "<ul>", "<s>b</s>", "<table>"):
        assert fragment in out
    assert '<th class="align-left">h</th>' in out
    assert '<td class="align-center">2</td>' in out


def test_line_breaks_are_kept() -> None:
    assert "<br>" in render_markdown("roses are red\nviolets are blue")


def test_class_injection_is_dropped() -> None:
    # Content cannot make up classes: only Pygments' token classes pass.
    out = render_markdown("```python\nx = 1\n```")
    assert 'class="n"' in out
    out = sanitize_html('<span class="overlay k">fake dialog</span>')
    assert out == '<span class="k">fake dialog</span>'


def test_empty_and_huge_input() -> None:
    assert render_markdown("") == ""
    huge = "<script>x</script>" + "a" * MAX_MARKDOWN_CHARS
    out = render_markdown(huge)
    assert out.startswith("<pre>&lt;script&gt;")
    assert_inert(out)

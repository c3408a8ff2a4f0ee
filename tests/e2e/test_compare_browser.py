"""The compare page in a real browser (Debian's chromium via Playwright) against a
real server: keyboard-only labelling, XSS staying inert, latency of the next pair,
and a server killed mid-submit losing and duplicating nothing."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from labelapp.models import (
    Assignment,
    Comparison,
    Label,
    Membership,
    Project,
    Response,
)
from tests.e2e.conftest import ServerProcess, free_port
from tests.frontend.conftest import make_comparison
from tests.frontend.xss_corpus import XSS_PAYLOADS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "e2e-password-9fQ2"
ROOT = Path(__file__).resolve().parents[2]

SCREENSHOT_PROMPT = [
    {"role": "system", "content": "You are a careful Python tutor."},
    {"role": "user", "content": "How do I read a file line by line?"},
    {"role": "assistant", "content": "Do you need the line numbers too?"},
    {"role": "user", "content": "Yes, and skip **blank** lines please."},
]
SCREENSHOT_A = """Use `enumerate` over the file object:

```python
from pathlib import Path

with Path("notes.txt").open(encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
        if line.strip():
            print(number, line.rstrip())
```

- the file is read lazily, one line at a time
- `start=1` numbers lines from one
"""
SCREENSHOT_B = """Read everything, then filter:

| approach | memory | blank lines |
|---|:-:|---|
| `readlines()` | whole file | kept |
| list comprehension | whole file | dropped |

```python
lines = [l for l in open("notes.txt").readlines() if l.strip()]
for i in range(len(lines)):
    print(i, lines[i])
```

Note: this numbers the *kept* lines, not the original ones.
"""


def _setup_project(django_user_model: Any, n: int) -> tuple[Any, Project]:
    user = django_user_model.objects.create_user(username="ann", password=PASSWORD)
    project = Project.objects.create(
        name="Helpfulness",
        overlap=1,
        guidelines="Prefer the **more helpful** answer.",
    )
    Membership.objects.create(project=project, user=user)
    for i in range(n):
        make_comparison(
            project,
            [{"role": "user", "content": f"Question number {i}?"}],
            f"Left answer {i}",
            f"Right answer {i}",
            random_key=i / 100,
        )
    return user, project


def login(page: Any, base_url: str) -> None:
    """Keyboard only: the username field has autofocus."""
    page.goto(f"{base_url}/login/")
    # autofocus is applied after load; wait for it rather than race it.
    page.wait_for_function("() => document.activeElement.id === 'id_username'")
    page.keyboard.type("ann")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base_url}/")


def wait_shown(page: Any, *, prefetched: bool = True) -> dict[str, int]:
    page.wait_for_function("() => window.pairloopStats && window.pairloopStats.current")
    if prefetched:
        page.wait_for_function("() => window.pairloopStats.prefetchReady")
    return page.evaluate("() => window.pairloopStats.current")


def wait_sent(page: Any, timeout: float = 15_000) -> None:
    page.wait_for_function("() => window.pairloopStats.pending === 0", timeout=timeout)


def shown_left_response(page: Any, comparison: Comparison) -> Response:
    """Which stored response the page shows on the left, from its rendered text."""
    text = page.inner_text("#response-a").strip()
    for response in (comparison.response_a, comparison.response_b):
        if response.text == text:
            return response
    raise AssertionError(f"left side shows {text!r}, neither response of {comparison}")


def expected_canonical(
    display_choice: str, left: Response, comparison: Comparison
) -> str:
    swapped = left.pk != comparison.response_a_id
    if swapped and display_choice in {"a", "b"}:
        return {"a": "b", "b": "a"}[display_choice]
    return display_choice


@pytest.mark.django_db(transaction=True)
def test_label_five_by_keyboard(
    live_server: Any, page: Any, django_user_model: Any
) -> None:
    user, project = _setup_project(django_user_model, 7)
    login(page, live_server.url)
    page.goto(f"{live_server.url}/projects/{project.pk}/compare/")

    # The label bodies as sent: tie and both bad go without a strength.
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: sent.append(r.post_data_json) if r.url.endswith("/label/") else None,
    )

    # (keys, display choice, strength, rationale, dwell ms before answering)
    plans = [
        (["1", "e"], "a", 3, "", 0),
        (["b", "r"], "b", 4, "", 300),
        (["t"], "tie", None, "", 0),
        (["x"], "both_bad", None, "", 0),
        (["2", "q"], "b", 1, "Right one is shorter.", 0),
    ]
    toasts = []
    expected: dict[int, tuple[str, int | None, str, int]] = {}
    for keys, choice, strength, rationale, dwell in plans:
        current = wait_shown(page)
        comparison = Comparison.objects.select_related("response_a", "response_b").get(
            pk=current["comparisonId"]
        )
        left = shown_left_response(page, comparison)
        if dwell:
            page.wait_for_timeout(dwell)
        for key in keys:
            page.keyboard.press(key)
        if rationale:
            page.keyboard.press("c")
            page.keyboard.type(rationale)
            # Letters typed into the box must not act as shortcuts.
            assert page.evaluate("() => window.pairloopStats.current.comparisonId") == (
                comparison.pk
            )
            page.keyboard.press("Escape")
        page.keyboard.press("Enter")
        # A brief confirmation that the key press took (issue 15, item 16).
        toasts.append(page.inner_text("#toast"))
        assert page.is_visible("#toast")
        expected[comparison.pk] = (
            expected_canonical(choice, left, comparison),
            strength,
            rationale,
            dwell,
        )

    assert toasts == [
        "Submitted: A is better (3)",
        "Submitted: B is better (4)",
        "Submitted: Tie",
        "Submitted: Both bad",
        "Submitted: B is better (1)",
    ]

    # And skip the sixth, by keyboard too.
    sixth = wait_shown(page)
    page.keyboard.press("s")
    assert page.inner_text("#toast") == "Skipped"
    page.wait_for_function(
        "id => window.pairloopStats.current.comparisonId !== id",
        arg=sixth["comparisonId"],
    )
    wait_sent(page)
    # ... and the toast goes away by itself.
    page.wait_for_selector("#toast", state="hidden", timeout=5_000)
    by_choice = {b["choice"]: b for b in sent}
    assert (
        "strength" not in by_choice["tie"] and "strength" not in by_choice["both_bad"]
    )
    assert by_choice["a"]["strength"] == 3
    skipped = Assignment.objects.get(pk=sixth["assignmentId"])
    assert skipped.state == Assignment.State.SKIPPED
    labels = list(Label.objects.filter(annotator=user).select_related("assignment"))
    assert len(labels) == 5
    assert {label.comparison_id for label in labels} == set(expected)
    for label in labels:
        choice, strength, rationale, dwell = expected[label.comparison_id]
        assert label.choice == choice
        assert label.strength == strength
        assert label.rationale == rationale
        assert label.duration_ms is not None and label.duration_ms > 0
        assert label.duration_ms >= dwell * 0.8
        assert label.idempotency_key
        assert label.assignment.state == Assignment.State.LABELLED
    assert not page.dialogs and not page.js_errors

    swaps = page.evaluate("() => window.pairloopStats.swaps")[:5]  # the labels'
    assert len(swaps) == 5
    median = statistics.median(swaps)
    # Baseline, from the same run: what a page without the outbox and prefetch
    # would wait per pair at least, i.e. one label POST plus one next round trip
    # (Resource Timing of the requests this page made in the background).
    timings = page.evaluate(
        """() => performance.getEntriesByType('resource').map(
             e => [e.name, e.duration])"""
    )
    label_ms = statistics.median(d for name, d in timings if name.endswith("/label/"))
    next_ms = statistics.median(d for name, d in timings if "next.json" in name)
    baseline = label_ms + next_ms
    print(
        f"\nnext-pair latency after submit (keypress -> painted, ms): "
        f"median {median:.1f}, max {max(swaps):.1f}, all {[round(s, 1) for s in swaps]}"
        f"\nbaseline without prefetch/outbox (label POST {label_ms:.1f} + next.json "
        f"{next_ms:.1f}, before any painting): {baseline:.1f} ms; "
        f"ratio {baseline / median:.1f}x"
    )
    assert median < 100


@pytest.mark.django_db(transaction=True)
def test_xss_corpus_is_inert_in_the_page(
    live_server: Any, page: Any, django_user_model: Any
) -> None:
    user, project = _setup_project(django_user_model, 0)
    project.guidelines = "\n\n".join(XSS_PAYLOADS)
    project.save()
    half = len(XSS_PAYLOADS) // 2
    for i, chunk in enumerate((XSS_PAYLOADS[:half], XSS_PAYLOADS[half:])):
        make_comparison(
            project,
            [
                {"role": "system", "content": "\n\n".join(chunk)},
                {"role": "user", "content": "\n\n".join(reversed(chunk))},
            ],
            f"response {i} one\n\n" + "\n\n".join(chunk),
            f"response {i} two\n\n" + "\n\n".join(XSS_PAYLOADS),
            random_key=i,
        )
    # Record CSP violations too: sanitised content needs no inline anything, so any
    # violation means something slipped through to the browser.
    page.add_init_script(
        "window.__csp = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    login(page, live_server.url)
    page.goto(f"{live_server.url}/projects/{project.pk}/compare/")

    check = """() => {
      const bad = [];
      const ours = new URL('/static/frontend/compare.js', location.href).href;
      for (const s of document.scripts) if (s.src !== ours) bad.push('script ' + s.src);
      for (const node of document.querySelectorAll('#compare *')) {
        for (const attr of node.attributes) {
          const v = attr.value.replace(/[\\s\\x00-\\x1f]/g, '').toLowerCase();
          if (attr.name.startsWith('on')) bad.push('handler ' + attr.name);
          if (attr.name === 'style') bad.push('style attr');
          if (/^(javascript|vbscript|data):/.test(v)) bad.push(attr.name + '=' + v);
        }
      }
      const tags = 'iframe,object,embed,svg,math,img,style,form:not(#label-form),'
        + 'input:not([name=choice]):not([name=strength]),base,link,meta';
      for (const node of document.querySelectorAll('#compare ' + tags.split(',')
        .join(', #compare '))) bad.push('tag ' + node.tagName);
      return bad;
    }"""
    first = wait_shown(page)
    page.keyboard.press("g")  # open the guidelines, full of payloads too
    page.wait_for_timeout(300)
    assert page.evaluate(check) == []
    assert "alert('xss-1')" in page.inner_text("#response-b")  # shown as text
    page.keyboard.press("x")
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"() => window.pairloopStats.current.comparisonId !== {first['comparisonId']}"
    )
    page.wait_for_timeout(300)
    assert page.evaluate(check) == []
    wait_sent(page)
    assert page.dialogs == []
    assert page.evaluate("() => window.__csp") == []
    assert page.js_errors == []
    assert Label.objects.filter(annotator=user).count() == 1


@pytest.mark.django_db(transaction=True)
def test_compare_page_screenshot(
    live_server: Any, page: Any, django_user_model: Any, tmp_path: Path
) -> None:
    """Saves docs/compare-page.png when PAIRLOOP_SCREENSHOT=1 (see bench/screenshot.py);
    otherwise just checks the page renders the conversation, code and table."""
    _user, project = _setup_project(django_user_model, 0)
    project.guidelines = (
        "Prefer the answer that is **correct**, then the one that is *clearer*.\n\n"
        "- Judge the final answer, not the style.\n"
        "- Use *both bad* for two wrong answers."
    )
    project.save()
    make_comparison(project, SCREENSHOT_PROMPT, SCREENSHOT_A, SCREENSHOT_B)
    make_comparison(project, [{"role": "user", "content": "next"}], "one", "two")
    login(page, live_server.url)
    page.goto(f"{live_server.url}/projects/{project.pk}/compare/")
    shown_at = time.monotonic()  # a little after the page started its stopwatch
    wait_shown(page)
    assert page.locator(".conversation .message").count() == 4
    assert page.locator(".response-body pre code span.k").count() > 0
    assert page.locator(".response-body table").count() == 1
    page.keyboard.press("1")
    page.keyboard.press("e")
    page.set_viewport_size({"width": 1440, "height": 1000})
    page.wait_for_timeout(2200)  # let the visible-time counter tick
    target = (
        ROOT / "docs" / "compare-page.png"
        if os.environ.get("PAIRLOOP_SCREENSHOT") == "1"
        else tmp_path / "compare-page.png"
    )
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000

    # The shortcut overlay opens with "?" and closes with Esc.
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert page.locator("#help").is_hidden()

    # Time spent counts only while the tab is visible: hide it for 1.5 s.
    page.evaluate(
        """() => {
          Object.defineProperty(document, 'hidden', {value: true, configurable: true});
          document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    page.wait_for_timeout(1500)
    page.evaluate(
        """() => {
          Object.defineProperty(document, 'hidden', {value: false, configurable: true});
          document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    page.keyboard.press("Enter")
    wait_sent(page)
    elapsed_ms = (time.monotonic() - shown_at) * 1000
    label = Label.objects.get()
    assert label.duration_ms is not None
    assert 2000 <= label.duration_ms <= elapsed_ms - 1400


@pytest.mark.django_db(transaction=True)
def test_server_killed_mid_submit_loses_and_duplicates_nothing(
    page: Any, django_user_model: Any
) -> None:
    user, project = _setup_project(django_user_model, 6)
    server = ServerProcess(connection.settings_dict["NAME"], free_port())
    server.start()
    try:
        login(page, server.url)
        page.goto(f"{server.url}/projects/{project.pk}/compare/")

        # 1: a normal label.
        first = wait_shown(page)
        page.keyboard.press("1")
        page.keyboard.press("w")
        page.keyboard.press("Enter")
        wait_sent(page)

        # 2: the server receives and commits the label, then dies before answering:
        # the page sees a reset connection and must retry with the same key.
        def kill_after_commit(route: Any) -> None:
            route.fetch()  # forwarded to the server, which stores the label
            server.kill()
            route.abort("connectionreset")

        label_glob = "**/api/v1/assignments/*/label/"
        page.route(label_glob, kill_after_commit, times=1)
        second = wait_shown(page)
        page.keyboard.press("2")
        page.keyboard.press("r")
        page.keyboard.press("Enter")
        status = page.locator("#outbox-status")
        status.wait_for(state="visible")
        assert "1 label waiting to be sent — retrying" in status.inner_text()
        assert not server.is_up()

        # 3: the prefetched pair is on screen at once; label it while the server
        # is down. It waits in localStorage with the other one.
        third = page.evaluate("() => window.pairloopStats.current")
        done_ids = [first["comparisonId"], second["comparisonId"]]
        assert third["comparisonId"] not in done_ids
        page.keyboard.press("t")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => document.getElementById('outbox-status').textContent"
            ".includes('2 labels waiting')"
        )
        stored = page.evaluate(
            "() => Object.entries(localStorage)"
            ".filter(([k]) => k.startsWith('pairloop.outbox'))"
            ".map(([, v]) => JSON.parse(v))[0]"
        )
        assert [item["body"]["choice"] for item in stored] == ["b", "tie"]
        keys = {
            item["comparisonId"]: item["body"]["idempotency_key"] for item in stored
        }
        # The second label did reach the database before the server died.
        assert Label.objects.filter(comparison_id=second["comparisonId"]).count() == 1

        server.start()
        wait_sent(page, timeout=30_000)
        # The next pair arrives once the server is back.
        page.wait_for_function(
            "ids => { const c = window.pairloopStats.current;"
            " return c && !ids.includes(c.comparisonId); }",
            arg=[*done_ids, third["comparisonId"]],
        )
        assert page.locator("#outbox-status").is_hidden()
        assert page.locator("#error-status").is_hidden()

        labels = Label.objects.filter(annotator=user).order_by("created_at")
        assert [label.comparison_id for label in labels] == [
            first["comparisonId"],
            second["comparisonId"],
            third["comparisonId"],
        ]
        by_comparison = {label.comparison_id: label for label in labels}
        assert (
            by_comparison[second["comparisonId"]].idempotency_key
            == (keys[second["comparisonId"]])
        )
        assert (
            by_comparison[third["comparisonId"]].idempotency_key
            == (keys[third["comparisonId"]])
        )
        assert by_comparison[third["comparisonId"]].choice == "tie"
        assert Label.objects.count() == 3
        assert Assignment.objects.filter(annotator=user, state="labelled").count() == 3
        assert page.dialogs == []
        # End quiescent: the page's prefetch must not be cut by the kill below.
        page.wait_for_function("() => window.pairloopStats.idle")
    finally:
        server.kill()


NARROW_TABLE = """| Round | Diversity | Truncation | Reward | Length | Agreement |
|---|---|---|---|---|---|
| 1 | 0.8123 | 0.0125 | 1.2345 | 212.5 | 0.8125 |
| 2 | 0.7931 | 0.0250 | 1.3012 | 230.0 | 0.7750 |
"""


@pytest.mark.django_db(transaction=True)
def test_narrow_markdown_table_scrolls_instead_of_breaking_words(
    live_server: Any, page: Any, django_user_model: Any
) -> None:
    """A table wider than its column scrolls sideways; its words stay whole (it used
    to read "Diversi ty", .md's overflow-wrap: anywhere reaching the cells)."""
    user = django_user_model.objects.create_user(username="ann", password=PASSWORD)
    project = Project.objects.create(name="Tables", overlap=1)
    Membership.objects.create(project=project, user=user)
    make_comparison(
        project,
        [{"role": "user", "content": "Summarise the rounds."}],
        NARROW_TABLE,
        "No table here.",
    )
    page.set_viewport_size({"width": 360, "height": 800})
    login(page, live_server.url)
    page.goto(f"{live_server.url}/projects/{project.pk}/compare/")
    wait_shown(page, prefetched=False)
    side = (
        "#response-a"
        if "Diversity" in page.inner_text("#response-a")
        else ("#response-b")
    )
    cells = page.evaluate(
        """side => [...document.querySelectorAll(`${side} th, ${side} td`)]
             .map(cell => {
               const range = document.createRange();
               range.selectNodeContents(cell);
               const lines = new Set(
                 [...range.getClientRects()].map(r => Math.round(r.top)));
               return [cell.textContent.trim(), lines.size];
             })""",
        side,
    )
    assert ("Diversity", 1) in [tuple(c) for c in cells]
    assert all(lines == 1 for _text, lines in cells), cells
    table = page.evaluate(
        """side => { const t = document.querySelector(`${side} table`);
                     return [t.scrollWidth, t.clientWidth,
                             getComputedStyle(t).overflowX]; }""",
        side,
    )
    scroll_width, client_width, overflow_x = table
    assert scroll_width > client_width and overflow_x == "auto"
    assert not page.js_errors

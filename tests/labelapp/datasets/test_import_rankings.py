"""Importing ranking records: items, rankings, their implied pairs, and line-precise
all-or-nothing refusals."""

from __future__ import annotations

import pytest

from labelapp.datasets.importing import import_files
from labelapp.errors import ImportFailed
from labelapp.models import (
    Comparison,
    Label,
    Project,
    Prompt,
    Ranking,
    RankingItem,
    Response,
)
from tests.labelapp.datasets.test_importing import write_jsonl

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return Project.objects.create(name="rank-imports", overlap=2)


def _texts(comparison: Comparison) -> tuple[str, str]:
    return comparison.response_a.text, comparison.response_b.text


def implied(project) -> dict[tuple[str, str], float]:
    """Each comparison as (text of A, text of B) -> p_a."""
    return {
        _texts(c): c.p_a
        for c in Comparison.objects.filter(project=project).select_related(
            "response_a", "response_b"
        )
    }


def test_ranked_and_unranked_records(project, tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl.gz",
        [
            # "c" best, "a" and "d" tie second, "b" unranked.
            {"prompt": "p1", "responses": ["a", "b", "c", "d"], "ranking": [2, [0, 3]]},
            {"messages": [{"role": "user", "content": "p2"}], "responses": ["x", "y"]},
        ],
    )
    result = import_files(project=project, paths=[path])
    assert result.created["ranking_items"] == 2
    assert result.created["rankings"] == 1
    assert "2 new ranking items, 1 new rankings" in result.summary()
    ranked = RankingItem.objects.get(prompt__messages__0__content="p1")
    ids = {r.text: r.id for r in Response.objects.filter(prompt=ranked.prompt)}
    assert ranked.response_ids == [ids[t] for t in "abcd"]
    assert ranked.status == RankingItem.Status.COMPLETE  # k = 1, like an import
    ranking = Ranking.objects.get(item=ranked)
    assert ranking.tiers == [[ids["c"]], [ids["a"], ids["d"]]]
    assert ranking.annotator.username == "imported"
    # Responses were created in order a, b, c, d: a has the lowest id.
    assert implied(project) == {
        ("a", "b"): 1.0,  # ranked beats unranked
        ("a", "c"): 0.0,
        ("a", "d"): 0.5,  # tie
        ("b", "c"): 0.0,
        ("b", "d"): 0.0,
        ("c", "d"): 1.0,
    }
    labels = Label.objects.filter(comparison__project=project)
    assert labels.count() == 6
    assert set(labels.values_list("source", "review_state")) == {
        ("ranking", "accepted")
    }
    assert set(
        Comparison.objects.filter(project=project).values_list("origin", "status")
    ) == {("ranking", "complete")}
    unranked = RankingItem.objects.get(prompt__messages__0__content="p2")
    assert unranked.status == RankingItem.Status.OPEN
    assert unranked.labels_required == project.overlap
    # Importing again adds nothing.
    again = import_files(project=project, paths=[path])
    assert set(again.created.values()) == {0}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"prompt": "p", "responses": ["only one"]},
            "field 'responses' has 1 responses; a ranking needs 2..9",
        ),
        (
            {"prompt": "p", "responses": [str(i) for i in range(10)]},
            "field 'responses' has 10 responses",
        ),
        ({"prompt": "p", "responses": "a, b"}, "field 'responses'='a, b' must be"),
        (
            {"prompt": "p", "responses": ["a", ""]},
            "field 'responses'[1]='' must be a non-empty string",
        ),
        (
            {"prompt": "p", "responses": ["a", "b", "a"]},
            "field 'responses'[2] repeats responses[0]",
        ),
        (
            {"prompt": "p", "responses": ["a", "b"], "ranking": [0, 5]},
            "field 'ranking'=[0, 5]: tier 1 holds 5, which is not one of the "
            "responses (0, 1)",
        ),
        (
            {"prompt": "p", "responses": ["a", "b"], "ranking": [1, [1]]},
            "field 'ranking'=[1, [1]]: 1 is ranked twice",
        ),
        (
            # 1.0 == 1 but is no index (it crashed the writer with a TypeError).
            {"prompt": "p", "responses": ["a", "b"], "ranking": [1.0, 0]},
            "field 'ranking'=[1.0, 0]: tier 0 holds 1.0",
        ),
        (
            {"prompt": "p", "responses": ["a", "b"], "ranking": []},
            "field 'ranking'=[]: the ranking ranks nothing",
        ),
        ({"prompt": "p", "ranking": [0]}, "field 'ranking' needs a 'responses' list"),
        ({"responses": ["a", "b"]}, "no prompt"),
    ],
)
def test_a_bad_ranking_line_names_file_line_field_and_value(
    project, tmp_path, record, message
):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"prompt": "fine", "responses": ["u", "v"], "ranking": [0]}, record],
    )
    with pytest.raises(ImportFailed) as err:
        import_files(project=project, paths=[path])
    assert str(err.value).startswith(f"{path}, line 2: ")
    assert message in str(err.value)
    # All or nothing: the good first line was not written either.
    assert not Prompt.objects.filter(project=project).exists()
    assert not RankingItem.objects.exists()
    assert not Label.objects.exists()


def test_a_later_ranking_of_the_same_responses_replaces_the_first(project, tmp_path):
    path = write_jsonl(
        tmp_path / "twice.jsonl",
        [
            {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 1, 2]},
            {"prompt": "p", "responses": ["c", "b", "a"], "ranking": [[0, 2]]},
        ],
    )
    import_files(project=project, paths=[path])
    assert RankingItem.objects.count() == 1
    assert Ranking.objects.count() == 1
    # Second line: c = a best, b unranked. Pair (a, b) now 1, (b, c) now 0.
    assert implied(project) == {("a", "b"): 1.0, ("a", "c"): 0.5, ("b", "c"): 0.0}


# --- Open-Assistant message trees ---------------------------------------------


def _tree(replies: list, *, text: str = "root question") -> dict:
    return {
        "message_tree_id": "t1",
        "prompt": {"text": text, "role": "prompter", "replies": replies},
    }


def _reply(text: str, rank, replies=(), role: str = "assistant") -> dict:
    return {"text": text, "role": role, "rank": rank, "replies": list(replies)}


def test_an_oasst_tree_imports_one_ranking_per_ranked_sibling_group(project, tmp_path):
    tree = _tree(
        [
            _reply("good", 0, [_reply("follow-up", 0, role="prompter")]),
            _reply("worse", 2),
            _reply("ok", 1),
            _reply("never ranked", None),
        ]
    )
    # The follow-up's own assistant replies form a second group (path of 3).
    tree["prompt"]["replies"][0]["replies"][0]["replies"] = [
        _reply("deep best", 0),
        _reply("deep tie", 1),
        _reply("deep tie too", 1),
    ]
    path = write_jsonl(tmp_path / "oasst.jsonl", [tree])
    result = import_files(project=project, paths=[path])
    assert result.created["ranking_items"] == 2 and result.created["rankings"] == 2
    (top,) = [i for i in RankingItem.objects.all() if len(i.prompt.messages) == 1]
    ids = {r.text: r.id for r in Response.objects.filter(prompt=top.prompt)}
    assert set(ids) == {"good", "ok", "worse"}  # the unranked reply is left out
    assert Ranking.objects.get(item=top).tiers == [
        [ids["good"]], [ids["ok"]], [ids["worse"]]
    ]  # fmt: skip
    deep = RankingItem.objects.exclude(pk=top.pk).get()
    assert [m["role"] for m in deep.prompt.messages] == ["user", "assistant", "user"]
    assert [m["content"] for m in deep.prompt.messages] == [
        "root question", "good", "follow-up"
    ]  # fmt: skip
    d = {r.text: r.id for r in Response.objects.filter(prompt=deep.prompt)}
    assert Ranking.objects.get(item=deep).tiers == [
        [d["deep best"]], [d["deep tie"], d["deep tie too"]]
    ]  # fmt: skip
    # 3 + 3 implied pairs, the two equal ranks a tie.
    pairs = implied(project)
    assert len(pairs) == 6
    assert pairs[("deep tie", "deep tie too")] == 0.5


def test_a_bad_oasst_tree_names_the_message(project, tmp_path):
    bad = _tree([_reply("a", 0), _reply("b", "first")])
    path = write_jsonl(tmp_path / "oasst.jsonl", [bad])
    with pytest.raises(ImportFailed, match=r"line 1: prompt.replies\[1\].rank='first'"):
        import_files(project=project, paths=[path])
    lonely = _tree([_reply("a", 0), _reply("b", None)])
    path = write_jsonl(tmp_path / "lonely.jsonl", [lonely])
    with pytest.raises(ImportFailed, match="no message with two or more ranked"):
        import_files(project=project, paths=[path])
    assert not RankingItem.objects.exists() and not Prompt.objects.exists()


@pytest.mark.slow
def test_the_shared_oasst_sample_imports_212_rankings_implying_754_pairs(
    project, tmp_path
):
    from tests.conftest import shared_data_file

    path = shared_data_file("oasst-en-100-trees.jsonl.gz")
    result = import_files(project=project, paths=[path])
    assert result.created["ranking_items"] == 212
    assert result.created["rankings"] == 212
    assert Comparison.objects.filter(project=project, origin="ranking").count() == 754
    assert Label.objects.filter(comparison__project=project).count() == 754

"""Imports: every line format, atomic failure naming the line, idempotence, real data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from labelapp.datasets.importing import import_files
from labelapp.errors import ImportFailed
from labelapp.models import Comparison, Label, Project, Prompt, Response
from tests.conftest import shared_data_file

pytestmark = pytest.mark.django_db


def write_jsonl(path: Path, rows: list[object]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def project():
    return Project.objects.create(name="imports", overlap=2)


def counts(project) -> tuple[int, int, int, int]:
    return (
        Prompt.objects.filter(project=project).count(),
        Response.objects.filter(prompt__project=project).count(),
        Comparison.objects.filter(project=project).count(),
        Label.objects.filter(comparison__project=project).count(),
    )


def test_prompt_formats(project, tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl.gz",
        [
            {"prompt": "plain"},
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "u"},
                ]
            },
            {"question_id": 81, "turns": ["first turn", "second turn"]},
            {"uid": "abc", "turns": [{"content": "arena style"}]},
            {"prompt": "plain"},
        ],
    )
    result = import_files(project=project, paths=[path])
    assert result.created["prompts"] == 4
    assert Prompt.objects.get(external_id="81").messages == [
        {"role": "user", "content": "first turn"}
    ]
    assert Prompt.objects.filter(external_id="abc").exists()


def test_response_formats_and_join_by_question_id(project, tmp_path):
    questions = write_jsonl(
        tmp_path / "q.jsonl", [{"question_id": "q1", "turns": ["Q?"]}]
    )
    answers = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {
                "question_id": "q1",
                "model_id": "m1",
                "choices": [{"turns": [{"content": "A1"}]}],
            },
            {
                "question_id": "q1",
                "model_id": "m2",
                "choices": [{"turns": [{"content": "A2"}]}],
            },
            {"prompt": "other", "response": "R"},
        ],
    )
    import_files(project=project, paths=[questions, answers], make_pairs=True)
    q = Prompt.objects.get(external_id="q1")
    assert sorted(q.responses.values_list("model_ref", flat=True)) == ["m1", "m2"]
    comparison = Comparison.objects.get(prompt=q)
    assert comparison.status == "open" and comparison.labels_required == 2
    assert counts(project) == (2, 3, 1, 0)


def test_unknown_question_id_names_line(project, tmp_path):
    answers = write_jsonl(
        tmp_path / "a.jsonl",
        [{"question_id": "nope", "choices": [{"turns": [{"content": "x"}]}]}],
    )
    with pytest.raises(
        ImportFailed, match=r"a\.jsonl, line 1: no prompt with .*'nope'"
    ):
        import_files(project=project, paths=[answers])
    assert counts(project) == (0, 0, 0, 0)


def test_pair_formats_store_imported_labels_in_canonical_orientation(project, tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "P1", "chosen": "good", "rejected": "bad"},
            {
                "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: ha",
                "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: no",
            },
            {
                "messages": [{"role": "user", "content": "P3"}],
                "response_a": "x",
                "response_b": "y",
                "p_a": 0.25,
                "strength": 3,
            },
            {"prompt": "P4", "response_a": "u", "response_b": "v", "p_a": 0.5,
             "strength": 2},
        ],
    )  # fmt: skip
    result = import_files(project=project, paths=[path])
    assert result.created == {
        "prompts": 4,
        "responses": 8,
        "comparisons": 4,
        "labels": 4,
    }
    hh = Prompt.objects.get(messages__0__content="hi")
    assert hh.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "joke?"},
    ]
    for label in Label.objects.select_related("comparison__response_a"):
        comparison = label.comparison
        assert label.source == "imported" and label.annotator.username == "imported"
        assert comparison.status == "complete" and comparison.p_a == label.p_a
        a_text = comparison.response_a.text
        expected = {"good": 1.0, "bad": 0.0, "ha": 1.0, "no": 0.0, "x": 0.25, "y": 0.75}
        expected |= {"u": 0.5, "v": 0.5}
        assert label.p_a == expected[a_text]
    soft = Label.objects.get(comparison__prompt__messages__0__content="P3")
    assert soft.strength == 3 and soft.comparison.mean_strength == 3.0
    # A tie prefers neither response: the strength it came with is dropped (null,
    # as label_submit stores it), and it does not enter mean_strength.
    tie = Label.objects.get(comparison__prompt__messages__0__content="P4")
    assert tie.choice == "tie" and tie.strength is None
    assert tie.comparison.mean_strength is None and tie.comparison.majority == "tie"


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("{not json", "invalid JSON"),
        ('{"prompt": ""}', "field 'prompt' is empty"),
        (
            '{"prompt": "p", "response_a": "x", "response_b": "y", "p_a": 1.5}',
            "outside [0, 1]",
        ),
        (
            '{"prompt": "p", "response_a": "x", "response_b": "y", "p_a": 1, "strength": 7}',
            "strength",
        ),
        ('{"prompt": "p", "chosen": "same", "rejected": "same"}', "identical"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "role='robot'"),
        (
            '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: x", '
            '"rejected": "\\n\\nHuman: b\\n\\nAssistant: y"}',
            "differ before",
        ),
        ("[1, 2]", "expected a JSON object"),
        ('{"foo": 1}', "no prompt"),
    ],
)
def test_bad_line_aborts_whole_import_naming_the_line(
    project, tmp_path, bad_line, problem
):
    good = [json.dumps({"prompt": f"ok {i}", "response": f"r {i}"}) for i in range(5)]
    path = write_jsonl(tmp_path / "mixed.jsonl", [*good[:3], bad_line, *good[3:]])
    with pytest.raises(ImportFailed) as err:
        import_files(project=project, paths=[path])
    assert "mixed.jsonl, line 4:" in str(err.value)
    assert problem in str(err.value)
    assert counts(project) == (0, 0, 0, 0)


def test_command_is_atomic_and_idempotent(tmp_path):
    good = write_jsonl(
        tmp_path / "good.jsonl", [{"prompt": "P", "chosen": "c", "rejected": "r"}]
    )
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q"}, "{oops"])
    with pytest.raises(CommandError, match=r"bad\.jsonl, line 2: invalid JSON"):
        call_command("import_data", str(good), str(bad), project="cmd")
    # Nothing at all, not even the new project, survives a failed import.
    assert not Project.objects.filter(name="cmd").exists()
    call_command("import_data", str(good), project="cmd")
    project = Project.objects.get(name="cmd")
    before = counts(project)
    assert before == (1, 2, 1, 1)
    call_command("import_data", str(good), project="cmd")
    assert counts(project) == before


def test_hh_harmless_dev_counts(project):
    path = shared_data_file("hh-harmless-dev.jsonl.gz")
    # Six of the 1,800 lines are not a pair over one conversation (four have an
    # empty chosen reply, two diverge before the last turn): strict mode refuses.
    with pytest.raises(ImportFailed, match=r"line 87: the chosen response is empty"):
        import_files(project=project, paths=[path])
    assert counts(project) == (0, 0, 0, 0)
    result = import_files(project=project, paths=[path], skip_invalid=True)
    assert len(result.skipped) == 6
    assert result.created["comparisons"] == 1794
    assert result.created["labels"] == 1794
    assert (
        Label.objects.filter(comparison__project=project, source="imported").count()
        == 1794
    )
    assert result.created["prompts"] == Prompt.objects.filter(project=project).count()
    again = import_files(project=project, paths=[path], skip_invalid=True)
    assert again.created == {
        "prompts": 0,
        "responses": 0,
        "comparisons": 0,
        "labels": 0,
    }


def test_mt_bench_questions(project):
    result = import_files(
        project=project, paths=[shared_data_file("mt-bench-questions.jsonl")]
    )
    assert result.created["prompts"] == 80
    assert Prompt.objects.filter(project=project).exclude(external_id="").count() == 80


def test_arena_hard_answers_join_questions(project):
    files = [
        shared_data_file("arena-hard-questions.jsonl.gz"),
        shared_data_file("arena-hard-answers-gpt-4-0314.jsonl.gz"),
        shared_data_file("arena-hard-answers-gpt-3.5-turbo-0125.jsonl.gz"),
    ]
    result = import_files(project=project, paths=files, make_pairs=True)
    assert result.created["prompts"] == 500
    assert result.created["responses"] == 1000
    assert result.created["comparisons"] == 500
    models = set(
        Response.objects.filter(prompt__project=project).values_list(
            "model_ref", flat=True
        )
    )
    assert models == {"gpt-4-0314", "gpt-3.5-turbo-0125"}

"""Importing gold ranking items (``gold_tiers`` beside ``responses``): the item is
created gold with its known order, served to annotators and grading them; a bad
order is refused with "file, line, field, value" and nothing is written, from the
importer, ``manage.py import_data`` and the browser upload alike."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from labelapp.datasets.importing import import_files
from labelapp.errors import ImportFailed
from labelapp.models import Project, Prompt, Ranking, RankingItem, Response
from labelapp.queue.rankings import ranking_item_lease_for
from labelapp.selectors.quality import ranking_gold_agreement
from labelapp.selectors.uploads import upload_preview
from labelapp.services.rankings import ranking_submit
from labelapp.services.uploads import staged_files, upload_commit, upload_stage
from tests.labelapp.conftest import make_user
from tests.labelapp.datasets.test_importing import write_jsonl

pytestmark = pytest.mark.django_db

GOLD = {"prompt": "Name a prime.", "responses": ["7", "9", "Two"], "gold_tiers": [[0, 2], [1]]}  # fmt: skip
PLAIN = {"prompt": "Say hello.", "responses": ["Hello!", "hi"]}


@pytest.fixture
def project():
    return Project.objects.create(name="gold-imports", overlap=2)


def ids_by_text(item: RankingItem) -> dict[str, int]:
    return {r.text: r.id for r in Response.objects.filter(prompt=item.prompt)}


def test_a_gold_line_makes_a_gold_item_with_its_order_in_response_ids(
    project, tmp_path
):
    path = write_jsonl(tmp_path / "gold.jsonl", [GOLD, PLAIN])
    result = import_files(project=project, paths=[path])
    assert result.created["ranking_items"] == 2
    assert result.created["gold_ranking_items"] == 1
    assert "1 new gold ranking items" in result.summary()
    gold = RankingItem.objects.get(is_gold=True)
    ids = ids_by_text(gold)
    assert gold.gold_tiers == [[ids["7"], ids["Two"]], [ids["9"]]]
    # A gold item is for annotators to rank: open, the project's k, no ranking.
    assert (gold.status, gold.labels_required) == ("open", project.overlap)
    assert not Ranking.objects.exists()
    plain = RankingItem.objects.get(is_gold=False)
    assert plain.gold_tiers is None
    again = import_files(project=project, paths=[path])
    assert set(again.created.values()) == {0}


def test_the_imported_gold_item_is_served_and_grades_annotators(project, tmp_path):
    project.gold_rate = 1.0
    project.save()
    import_files(project=project, paths=[write_jsonl(tmp_path / "g.jsonl", [GOLD])])
    annotator = make_user(project=project)
    lease = ranking_item_lease_for(annotator=annotator, project_id=project.pk)
    assert lease is not None and lease.item.is_gold
    ids = ids_by_text(lease.item)
    # 7 over 9 right, Two over 9 right, 7 vs Two (a gold tie) ordered: a miss.
    ranking_submit(
        item=lease.item, annotator=annotator, tiers=[[ids["7"]], [ids["Two"]]]
    )
    score = ranking_gold_agreement(project=project)[annotator.pk]
    assert score == {"items": 1, "pairs": 3, "correct": 2, "accuracy": 2 / 3}


def test_a_later_line_replaces_the_gold_order(project, tmp_path):
    later = {**GOLD, "responses": ["Two", "9", "7"], "gold_tiers": [[1]]}
    import_files(
        project=project, paths=[write_jsonl(tmp_path / "g.jsonl", [GOLD, later])]
    )
    item = RankingItem.objects.get()
    assert item.gold_tiers == [[ids_by_text(item)["9"]]]


def with_gold(value: object, **extra: object) -> dict:
    return {**GOLD, "gold_tiers": value, **extra}


BAD_GOLD = [
    (with_gold([[0], [3]]), "field 'gold_tiers'=[[0], [3]]: tier 1 holds 3, which is not one of the responses (0..2)"),
    (with_gold([[0], [1, 0]]), "field 'gold_tiers'=[[0], [1, 0]]: 0 is ranked twice (again in tier 1)"),
    (with_gold([]), "field 'gold_tiers'=[]: the ranking ranks nothing"),
    (with_gold([[0], []]), "field 'gold_tiers'=[[0], []]: tier 1 is empty"),
    (with_gold("0 > 1"), "field 'gold_tiers'='0 > 1': expected a list of tiers"),
    (with_gold({"0": 1}), "field 'gold_tiers'={'0': 1}: expected a list of tiers"),
    (with_gold([["0"]]), "field 'gold_tiers'=[['0']]: tier 0 holds '0'"),
    (with_gold([[1.0]]), "field 'gold_tiers'=[[1.0]]: tier 0 holds 1.0"),
    (with_gold([[True]]), "field 'gold_tiers'=[[True]]: tier 0 holds True"),
    (with_gold([[0]], ranking=[0]), "field 'gold_tiers' with 'ranking'"),
    ({"prompt": "p", "gold_tiers": [[0]]}, "field 'gold_tiers' needs a 'responses' list"),
]  # fmt: skip


@pytest.mark.parametrize(("record", "message"), BAD_GOLD)
def test_bad_gold_names_file_line_field_and_value_and_writes_nothing(
    project, tmp_path, record, message
):
    path = write_jsonl(tmp_path / "bad.jsonl", [PLAIN, record])
    with pytest.raises(ImportFailed) as err:
        import_files(project=project, paths=[path])
    assert str(err.value).startswith(f"{path}, line 2: ")
    assert message in str(err.value)
    assert not Prompt.objects.exists()
    assert not RankingItem.objects.exists()


def test_import_data_reads_gold_and_refuses_bad_gold(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [GOLD, PLAIN])
    call_command("import_data", str(good), "--project=cli-gold")
    item = RankingItem.objects.get(project__name="cli-gold", is_gold=True)
    ids = ids_by_text(item)
    assert item.gold_tiers == [[ids["7"], ids["Two"]], [ids["9"]]]
    bad = write_jsonl(tmp_path / "bad.jsonl", [PLAIN, with_gold([[0], [0]])])
    with pytest.raises(CommandError) as err:
        call_command("import_data", str(bad), "--project=cli-bad")
    assert f"{bad}, line 2: field 'gold_tiers'=[[0], [0]]: 0 is ranked twice" in str(
        err.value
    )
    assert not Project.objects.filter(name="cli-bad").exists()


def test_the_browser_upload_reads_gold_and_refuses_bad_gold(settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path
    project = Project.objects.create(name="upload-gold", overlap=2)
    admin = make_user(project=project, role="admin")

    def stage(name: str, *rows: dict) -> str:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        files = [SimpleUploadedFile(name, data)]
        return upload_stage(project=project, by=admin, files=files)

    bad = stage("bad.jsonl", PLAIN, with_gold([[7]]))
    (preview,) = upload_preview(files=staged_files(project=project, staging_id=bad))
    assert preview.error.startswith("bad.jsonl, line 2: field 'gold_tiers'=[[7]]")
    with pytest.raises(ImportFailed, match=r"^bad\.jsonl, line 2: field 'gold_tiers'"):
        upload_commit(project=project, by=admin, staging_id=bad, make_pairs=False)
    assert not RankingItem.objects.filter(project=project).exists()
    good = stage("good.jsonl", GOLD)
    (preview,) = upload_preview(files=staged_files(project=project, staging_id=good))
    assert preview.error == "" and "gold responses to rank (1)" in preview.detected
    result = upload_commit(project=project, by=admin, staging_id=good, make_pairs=False)
    assert result.created["gold_ranking_items"] == 1
    item = RankingItem.objects.get(project=project)
    assert item.is_gold and item.gold_tiers is not None

"""``manage.py import_data`` as a user runs it: members added by username (issue 15
item 2), and hostile or empty files refused with "file, line, problem", a non-zero
exit, no traceback and nothing written (issue 14 item 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from labelapp.models import MAX_TEXT_CHARS, Membership, Project, Prompt
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


def _pairs(path: Path, n: int = 2) -> Path:
    path.write_text(
        "".join(
            json.dumps({"prompt": f"P{i}", "chosen": "c", "rejected": "r"}) + "\n"
            for i in range(n)
        )
    )
    return path


def _roles(project: Project) -> dict[str, str]:
    return dict(
        Membership.objects.filter(project=project).values_list("user__username", "role")
    )


def test_members_reviewers_and_admins_are_added(tmp_path: Path) -> None:
    users = get_user_model().objects
    for name in ("alice", "bob", "carol", "dave"):
        users.create_user(name)
    path = _pairs(tmp_path / "pairs.jsonl")
    call_command(
        "import_data",
        str(path),
        "--project=team",
        "--members=alice,bob",
        "--reviewers=carol",
        "--admins=dave",
    )
    project = Project.objects.get(name="team")
    assert _roles(project) == {
        "alice": "annotator",
        "bob": "annotator",
        "carol": "reviewer",
        "dave": "admin",
    }
    assert Prompt.objects.filter(project=project).count() == 2
    # A second import naming dave as a plain member does not demote him, and a
    # stronger role raises an existing member.
    call_command(
        "import_data", str(path), "--project=team", "--members=dave", "--admins=bob"
    )
    assert _roles(project)["dave"] == "admin" and _roles(project)["bob"] == "admin"


def test_unknown_member_names_the_user_and_writes_nothing(tmp_path: Path) -> None:
    get_user_model().objects.create_user("alice")
    path = _pairs(tmp_path / "pairs.jsonl")
    with pytest.raises(CommandError, match=r"no such user: mallory, zed"):
        call_command(
            "import_data", str(path), "--project=p", "--members=alice,zed,mallory"
        )
    assert not Project.objects.filter(name="p").exists()
    assert not Membership.objects.exists()
    with pytest.raises(CommandError, match="empty username"):
        call_command("import_data", str(path), "--project=p", "--members=alice,")


def test_added_members_see_the_project(tmp_path: Path) -> None:
    """The point of --members: the imported project is on the annotator's home page
    and its compare page opens (without it, both are hidden)."""
    alice = get_user_model().objects.create_user("alice", password="pw-alice-123")
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"prompt": "Q", "response": "r1"})
        + "\n"
        + json.dumps({"prompt": "Q", "response": "r2"})
        + "\n"
    )
    call_command(
        "import_data", str(path), "--project=visible", "--make-pairs", "--members=alice"
    )
    project = Project.objects.get(name="visible")
    client = Client()
    client.force_login(alice)
    assert "visible" in client.get("/").content.decode()
    compare = reverse("frontend:compare", args=[project.pk])
    assert client.get(compare).status_code == 200


# ------------------------------------------------------------------ bad files

DEEP = '{"prompt": "p", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
BIG_INT = '{"prompt": "p", "question_id": ' + "9" * 5000 + "}"
NUL = '{"prompt": "p", "response": "a\\u0000b"}'
NUL_MESSAGE = '{"messages": [{"role": "user", "content": "x\\u0000"}]}'
NUL_ID = '{"question_id": "q\\u0000", "turns": ["t"]}'
LONG = json.dumps({"prompt": "p", "response": "x" * (MAX_TEXT_CHARS + 1)})
LONG_PAIR = json.dumps(
    {"prompt": "p", "chosen": "y" * (MAX_TEXT_CHARS + 1), "rejected": "n"}
)
LONG_ID = json.dumps({"question_id": "q" * 201, "turns": ["t"]})


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        (DEEP, "invalid JSON: nested too deeply"),
        (BIG_INT, "invalid JSON: an integer literal over 4,300 digits"),
        (NUL, r"the response contains a NUL character (\u0000)"),
        (NUL_MESSAGE, r"prompt message 1 contains a NUL character (\u0000)"),
        (NUL_ID, r"question_id/uid contains a NUL character (\u0000)"),
        (
            LONG,
            "the response has 200,001 characters, over the limit of 200,000 "
            "(the same as the API's)",
        ),
        (LONG_PAIR, "the first response has 200,001 characters"),
        (LONG_ID, "question_id/uid has 201 characters, over the limit of 200"),
    ],
    ids=["deep", "big-int", "nul", "nul-message", "nul-id", "long", "long-pair", "id"],
)
def test_hostile_lines_name_file_and_line(
    tmp_path: Path, bad_line: str, problem: str
) -> None:
    path = _pairs(tmp_path / "bad.jsonl")
    with path.open("a") as fh:
        fh.write(bad_line + "\n")
    with pytest.raises(CommandError) as err:
        call_command("import_data", str(path), "--project=hostile")
    assert f"{path}, line 3: {problem}" in str(err.value)
    assert not Project.objects.filter(name="hostile").exists()
    assert not Prompt.objects.exists()


def test_text_at_the_limit_is_imported(tmp_path: Path) -> None:
    path = tmp_path / "edge.jsonl"
    path.write_text(
        json.dumps({"prompt": "p", "response": "x" * MAX_TEXT_CHARS}) + "\n"
    )
    call_command("import_data", str(path), "--project=edge")
    assert Project.objects.get(name="edge").prompts.count() == 1


@pytest.mark.parametrize("content", ["", "\n\n   \n\t\n"], ids=["empty", "blank"])
def test_empty_or_blank_file_is_an_error(tmp_path: Path, content: str) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text(content)
    good = _pairs(tmp_path / "good.jsonl")
    with pytest.raises(CommandError, match=r"empty\.jsonl: the file is empty"):
        call_command("import_data", str(good), str(empty), "--project=nothing")
    assert not Project.objects.filter(name="nothing").exists()
    assert not Prompt.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_real_command_exits_non_zero_without_a_traceback(tmp_path: Path) -> None:
    """As a user runs it: a process, its exit status and what it prints."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        "DEBUG": "1",
    }
    cases = {
        "deep.jsonl": DEEP,
        "bigint.jsonl": BIG_INT,
        "nul.jsonl": NUL,
        "long.jsonl": LONG,
        "blank.jsonl": "  \n",
    }
    for name, line in cases.items():
        path = tmp_path / name
        path.write_text(line + "\n")
        proc = subprocess.run(
            [sys.executable, "manage.py", "import_data", str(path), "--project=cli"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0, name
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        where = f"{path}:" if name == "blank.jsonl" else f"{path}, line 1:"
        assert where in proc.stderr and "nothing was imported" in proc.stderr
    assert not Project.objects.filter(name="cli").exists()

"""Record parsing: Pairloop's own exports (JSONL and Parquet, every kind) and the
HH transcript helpers shared with the labelling app's importer.

The export files are written here exactly as ``labelapp/datasets/ (export_formats.py, export_rows.py)`` writes them
(its Parquet schemas, its JSON separators, its row dicts), without Django."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.formats import (
    PairFormatError,
    RecordError,
    hh_prompt_messages,
    read_pairs,
    split_hh_reply,
)

# Copied from labelapp/datasets/ (export_formats.py, export_rows.py) (_preference_schema, _sft_schema, LABEL_SCHEMA).
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def preference_schema(messages: bool) -> pa.Schema:
    text = MESSAGES if messages else pa.string()
    return pa.schema(
        [
            ("prompt", text),
            ("chosen", text),
            ("rejected", text),
            ("p_a", pa.float64()),
            ("p_chosen", pa.float64()),
            ("agreement", pa.float64()),
            ("n_labels", pa.int32()),
            ("strength", pa.float64()),
            ("margin", pa.float64()),
            ("comparison_id", pa.int64()),
            ("prompt_id", pa.int64()),
            ("chosen_id", pa.int64()),
            ("rejected_id", pa.int64()),
            ("chosen_is_a", pa.bool_()),
            ("round", pa.int32()),
            ("strategy", pa.string()),
            ("origin", pa.string()),
        ]
    )


def sft_schema(messages: bool) -> pa.Schema:
    head = (
        [("messages", MESSAGES)]
        if messages
        else [("prompt", pa.string()), ("completion", pa.string())]
    )
    return pa.schema(
        [
            *head,
            ("reward", pa.float64()),
            ("round", pa.int32()),
            ("prompt_id", pa.int64()),
            ("response_id", pa.int64()),
        ]
    )


LABEL_SCHEMA = pa.schema(
    [
        ("label_id", pa.int64()),
        ("comparison_id", pa.int64()),
        ("prompt_id", pa.int64()),
        ("response_a_id", pa.int64()),
        ("response_b_id", pa.int64()),
        ("annotator", pa.string()),
        ("choice", pa.string()),
        ("strength", pa.int32()),
        ("p_a", pa.float64()),
        ("shown_swapped", pa.bool_()),
        ("duration_ms", pa.int64()),
        ("rationale", pa.string()),
        ("review_state", pa.string()),
        ("source", pa.string()),
        ("is_gold", pa.bool_()),
        ("round", pa.int32()),
        ("created_at", pa.string()),
    ]
)


def write_export(
    folder: Path, stem: str, fmt: str, rows: list[dict[str, Any]], schema: pa.Schema
) -> Path:
    """``_JsonlWriter`` / ``_ParquetWriter`` of labelapp/datasets/ (export_formats.py, export_rows.py)."""
    path = folder / f"{stem}.{fmt}"
    if fmt == "parquet":
        writer = pq.ParquetWriter(path, schema, compression="zstd")
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        writer.close()
    else:
        with path.open("w", encoding="utf-8") as fh:
            fh.writelines(
                json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                for r in rows
            )
    return path


def preference_row(
    cid: int, messages: bool, *, p_a: float, strength: float | None
) -> dict[str, Any]:
    """One row as ``_preference_texts`` builds it (3 labels, chosen side = A
    when p_a > 0.5)."""
    prompt = [{"role": "user", "content": f"question {cid} µ"}]
    a, b = f"answer A {cid}", f"answer B {cid}"
    chosen_is_a = p_a > 0.5
    chosen, rejected = (a, b) if chosen_is_a else (b, a)
    if messages:
        prompt_v: Any = prompt
        chosen_v: Any = [{"role": "assistant", "content": chosen}]
        rejected_v: Any = [{"role": "assistant", "content": rejected}]
    else:
        prompt_v, chosen_v, rejected_v = prompt[0]["content"], chosen, rejected
    margin = 0.0 if strength is None else (strength - 1) / 3 * abs(2 * p_a - 1)
    return {
        "prompt": prompt_v,
        "chosen": chosen_v,
        "rejected": rejected_v,
        "p_a": p_a,
        "p_chosen": p_a if chosen_is_a else 1.0 - p_a,
        "agreement": 2 / 3,
        "n_labels": 3,
        "strength": strength,
        "margin": round(margin, 6),
        "comparison_id": cid,
        "prompt_id": 100 + cid,
        "chosen_id": 200 + cid,
        "rejected_id": 300 + cid,
        "chosen_is_a": chosen_is_a,
        "round": None,
        "strategy": "",
        "origin": "import",
    }


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("messages", [False, True])
def test_preference_export_reads_as_pairs(
    tmp_path: Path, fmt: str, messages: bool
) -> None:
    rows = [
        preference_row(1, messages, p_a=2 / 3, strength=2.6667),
        preference_row(2, messages, p_a=0.0, strength=None),
        preference_row(3, messages, p_a=1.0, strength=4.0),
        preference_row(4, messages, p_a=1 / 3, strength=1.0),
    ]
    path = write_export(
        tmp_path, "demo-preferences", fmt, rows, preference_schema(messages)
    )
    pairs = read_pairs(path)
    assert [p.id for p in pairs] == [f"comparison-{i}" for i in (1, 2, 3, 4)]
    first = pairs[0]
    assert first.conversation == ({"role": "user", "content": "question 1 µ"},)
    assert (first.response_a, first.response_b) == ("answer A 1", "answer B 1")
    # A is the chosen side; its soft label is p_chosen, not a hard 1.
    assert first.p_a == pytest.approx(2 / 3)
    assert pairs[1].response_a == "answer B 2" and pairs[1].p_a == 1.0
    assert pairs[3].p_a == pytest.approx(2 / 3)
    # Mean strengths round to a level as the in-app loop does; null stays None.
    assert [p.strength for p in pairs] == [3, None, 4, 1]


@pytest.mark.parametrize("strength", [0.5, 4.01, float("nan"), "3", True])
def test_out_of_range_strength_is_refused(tmp_path: Path, strength: Any) -> None:
    row = preference_row(1, False, p_a=1.0, strength=None)
    row["strength"] = strength
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(PairFormatError, match=r"strength 1\.\.4") as info:
        read_pairs(path)
    assert info.value.field == "strength" and info.value.line == 1


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("messages", [False, True])
def test_sft_export_is_refused_naming_the_preferences_export(
    tmp_path: Path, fmt: str, messages: bool
) -> None:
    head: dict[str, Any] = (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        }
        if messages
        else {"prompt": "q", "completion": "a"}
    )
    row = {**head, "reward": 0.5, "round": 1, "prompt_id": 1, "response_id": 2}
    path = write_export(tmp_path, "demo-sft", fmt, [row], sft_schema(messages))
    with pytest.raises(PairFormatError, match="SFT") as info:
        read_pairs(path)
    assert "export kind 'preferences'" in str(info.value)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_labels_export_is_refused_naming_the_preferences_export(
    tmp_path: Path, fmt: str
) -> None:
    row = {
        "label_id": 1,
        "comparison_id": 2,
        "prompt_id": 3,
        "response_a_id": 4,
        "response_b_id": 5,
        "annotator": "ann-1f2e",
        "choice": "a",
        "strength": 3,
        "p_a": 1.0,
        "shown_swapped": False,
        "duration_ms": 1200,
        "rationale": "",
        "review_state": "pending",
        "source": "human",
        "is_gold": False,
        "round": None,
        "created_at": "2026-12-01T12:00:00+00:00",
    }
    path = write_export(tmp_path, "demo-labels", fmt, [row], LABEL_SCHEMA)
    with pytest.raises(PairFormatError, match="labels export") as info:
        read_pairs(path)
    assert "export kind 'preferences'" in str(info.value)


def test_parquet_bad_row_names_its_row_and_skip_invalid_collects_it(
    tmp_path: Path,
) -> None:
    rows = [preference_row(i, False, p_a=1.0, strength=2.0) for i in (1, 2, 3)]
    rows[1]["chosen"] = " "
    path = write_export(tmp_path, "p", "parquet", rows, preference_schema(False))
    with pytest.raises(PairFormatError) as info:
        read_pairs(path)
    assert info.value.line == 2 and f"{path}:2:" in str(info.value)
    skipped: list[PairFormatError] = []
    assert len(read_pairs(path, skipped=skipped)) == 2
    assert [e.line for e in skipped] == [2]


def test_a_file_that_is_not_parquet_says_so(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text('{"prompt": "q"}\n')
    with pytest.raises(PairFormatError, match="not a readable Parquet file"):
        read_pairs(path)


def test_binary_file_with_another_name_names_the_accepted_formats(
    tmp_path: Path,
) -> None:
    rows = [preference_row(1, False, p_a=1.0, strength=2.0)]
    src = write_export(tmp_path, "p", "parquet", rows, preference_schema(False))
    path = tmp_path / "p.data"
    path.write_bytes(src.read_bytes())
    with pytest.raises(PairFormatError, match=r"\.jsonl, \.jsonl\.gz or \.parquet"):
        read_pairs(path)


# --------------------------------------------------------------- HH, importer rules

HH = "\n\nHuman: how do I bake bread?\n\nAssistant: What kind?\n\nHuman: sourdough"


def test_split_hh_reply_and_prompt_messages() -> None:
    prefix, reply = split_hh_reply(HH + "\n\nAssistant:  Use a starter. ", "chosen")
    assert reply == "Use a starter."
    assert hh_prompt_messages(prefix) == [
        {"role": "user", "content": "how do I bake bread?"},
        {"role": "assistant", "content": "What kind?"},
        {"role": "user", "content": "sourdough"},
    ]


@pytest.mark.parametrize(
    ("transcript", "message"),
    [
        ("no turns here", "field 'chosen' is not a Human:/Assistant: transcript"),
        ("\n\nAssistant: hi", "field 'chosen' is not a Human:/Assistant: transcript"),
    ],
)
def test_split_hh_reply_refuses_non_transcripts(transcript: str, message: str) -> None:
    with pytest.raises(RecordError) as info:
        split_hh_reply(transcript, "chosen")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("Human: hi", "transcript turn does not start with Human: or Assistant:"),
        ("\n\nHuman:  \n\nAssistant: x\n\nHuman: y", "an empty user turn"),
        ("\n\nHuman: hi\n\nAssistant: there", "must end with a Human turn"),
        ("", "must end with a Human turn"),
    ],
)
def test_hh_prompt_messages_refuses_bad_prefixes(prefix: str, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        hh_prompt_messages(prefix)


def test_strength_level_rounds_like_the_in_app_loop() -> None:
    from training.formats import strength_level

    # labelapp/loop/overview.py training_pairs: round(mean_strength) with Python's round.
    assert [strength_level(v) for v in (1, 4, 2.6667, 2.5, 3.5, None)] == [
        1,
        4,
        3,
        2,
        4,
        None,
    ]
    with pytest.raises(RecordError, match=r"strength 1\.\.4"):
        strength_level(0)

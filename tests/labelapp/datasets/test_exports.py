"""Dataset exports (labelapp.datasets), read back by their real consumers:
Hugging Face ``datasets`` and TRL's RewardTrainer / DPOTrainer."""

from __future__ import annotations

import json
import os
import re
from io import StringIO
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from labelapp.datasets import export_rows
from labelapp.datasets.export_formats import annotator_pseudonym
from labelapp.datasets.exports import ExportOptions, export_run
from labelapp.errors import NotFound, ValidationFailed
from labelapp.models import Label, Round, SFTExample
from tests.labelapp.conftest_review import (
    review_comparison,
    review_label,
    review_project,
    review_prompt,
    review_refresh,
    review_response,
    review_user,
)
from tests.labelapp.datasets.conftest import MULTI_TURN, NOW

# No network: every model and tokenizer in these tests is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _load_dataset(path: Path, tmp_path: Path) -> Any:
    from datasets import load_dataset

    builder = "parquet" if path.suffix == ".parquet" else "json"
    return load_dataset(
        builder,
        data_files=str(path),
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )


# --- preferences ------------------------------------------------------------------


def test_preferences_jsonl_messages(
    demo: dict[str, Any], artifacts: Path, tmp_path: Path
) -> None:
    c = demo["c"]
    out = export_run(project=demo["project"], kind="preferences", now=lambda: NOW)
    assert out == artifacts / "exports" / "export-demo-preferences-20250102T030405Z"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "manifest.json",
        "preferences.jsonl",
    ]
    rows = {r["comparison_id"]: r for r in _read_jsonl(out / "preferences.jsonl")}
    assert set(rows) == {c[k].pk for k in ("clear", "major", "multi", "mixed")}

    clear = rows[c["clear"].pk]
    assert clear["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert clear["chosen"] == [{"role": "assistant", "content": "Hi!"}]
    assert clear["rejected"] == [{"role": "assistant", "content": "No."}]
    assert (clear["p_a"], clear["agreement"], clear["n_labels"]) == (1.0, 1.0, 3)
    assert clear["strength"] == 3.0 and clear["margin"] == pytest.approx(2 / 3)

    major = rows[c["major"].pk]
    assert major["chosen"][0]["content"] == "4" and not major["chosen_is_a"]
    assert major["p_a"] == pytest.approx(1 / 3) and major["p_chosen"] == pytest.approx(
        2 / 3
    )
    assert major["agreement"] == pytest.approx(2 / 3)
    assert major["chosen_id"] == c["major"].response_b_id

    multi = rows[c["multi"].pk]
    assert multi["prompt"] == [
        {"role": m["role"], "content": m["content"]} for m in MULTI_TURN
    ]
    # "both bad" does not enter p_a but lowers agreement.
    mixed = rows[c["mixed"].pk]
    assert (mixed["p_a"], mixed["agreement"], mixed["n_labels"]) == (1.0, 0.5, 2)
    assert mixed["strength"] == 3.0  # A/B labels only: both_bad's 1 does not count

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {
        "rows": 4,
        "ties": 1,
        "all_both_bad": 1,
        "below_min_agreement": 0,
        "below_min_labels": 0,
        "no_labels": 1,
    }
    card = (out / "README.md").read_text()
    assert "excluded, ties (p_a = 0.5): 1" in card
    assert 'every label "both bad": 1' in card
    assert "alpha:" in card and "License" in card
    assert f"python manage.py export --project {demo['project'].pk}" in card
    assert "--kind preferences --format jsonl --messages" in card

    ds = _load_dataset(out / "preferences.jsonl", tmp_path)
    assert ds.num_rows == 4
    assert set(ds.column_names) >= {"prompt", "chosen", "rejected", "p_a", "margin"}


def test_preferences_min_agreement_strings_parquet(
    demo: dict[str, Any], artifacts: Path, tmp_path: Path
) -> None:
    c = demo["c"]
    out = export_run(
        project=demo["project"],
        kind="preferences",
        options={"format": "parquet", "messages": False, "min_agreement": 0.7},
    )
    table = pq.read_table(out / "preferences.parquet")
    rows = {r["comparison_id"]: r for r in table.to_pylist()}
    assert set(rows) == {c["clear"].pk, c["multi"].pk}
    assert rows[c["clear"].pk]["prompt"] == "Say hi."
    assert rows[c["clear"].pk]["chosen"] == "Hi!"
    assert rows[c["multi"].pk]["prompt"] == (
        "System: Be brief.\n\nUser: Name a colour.\n\nAssistant: Red.\n\n"
        "User: Another one?"
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["below_min_agreement"] == 2
    assert "min agreement: 0.7" in (out / "README.md").read_text()
    ds = _load_dataset(out / "preferences.parquet", tmp_path)
    assert ds.num_rows == 2 and ds.features["prompt"].dtype == "string"

    # Conversational Parquet keeps the message structure.
    out2 = export_run(
        project=demo["project"], kind="preferences", options={"format": "parquet"}
    )
    ds2 = _load_dataset(out2 / "preferences.parquet", tmp_path)
    assert ds2.num_rows == 4
    assert ds2[0]["chosen"][0]["role"] == "assistant"


def test_rejecting_a_label_changes_p_a_and_the_next_export(
    db: None, artifacts: Path
) -> None:
    project = review_project("Reject Demo")
    u1, u2, u3 = (review_user(n) for n in ("r1", "r2", "r3"))
    comp = review_comparison(project, "Q?", "first", "second")
    la = review_label(comp, u1, "a", strength=3, review_state="accepted")
    lb = review_label(comp, u2, "a", strength=3, review_state="accepted")
    review_label(comp, u3, "b", strength=3, review_state="accepted")
    assert review_refresh(comp).p_a == pytest.approx(2 / 3)

    before = _read_jsonl(
        export_run(project=project, kind="preferences") / "preferences.jsonl"
    )
    assert before[0]["chosen"][0]["content"] == "first"

    # A reviewer rejects both A labels (label_review in labelapp.services.reviews once
    # the queue branch lands; here the state change plus a re-aggregation).
    Label.objects.filter(pk__in=[la.pk, lb.pk]).update(review_state="rejected")
    assert review_refresh(comp).p_a == 0.0

    after = _read_jsonl(
        export_run(project=project, kind="preferences") / "preferences.jsonl"
    )
    assert after[0]["chosen"][0]["content"] == "second"
    assert (after[0]["p_a"], after[0]["n_labels"]) == (0.0, 1)

    # With every label rejected the pair leaves the export.
    Label.objects.filter(comparison=comp).update(review_state="rejected")
    assert review_refresh(comp).p_a is None
    path = export_run(project=project, kind="preferences")
    assert (path / "preferences.jsonl").read_text() == ""
    assert json.loads((path / "manifest.json").read_text())["counts"]["no_labels"] == 1


# --- SFT and labels ---------------------------------------------------------------


def test_sft_export(db: None, artifacts: Path, tmp_path: Path) -> None:
    project = review_project("SFT Demo")
    r1 = Round.objects.create(project=project, number=1, policy_ref="p")
    r2 = Round.objects.create(project=project, number=2, policy_ref="p")
    for rnd, n in ((r1, 3), (r2, 2)):
        for i in range(n):
            prompt = review_prompt(project, f"prompt {i}")
            best = review_response(prompt, f"best {rnd.number}.{i}", round=rnd)
            SFTExample.objects.create(
                round=rnd, prompt=prompt, response=best, reward=float(i)
            )
    out = export_run(project=project, kind="sft")
    rows = _read_jsonl(out / "sft.jsonl")
    assert len(rows) == 5
    assert rows[0]["messages"] == [
        {"role": "user", "content": "prompt 0"},
        {"role": "assistant", "content": "best 1.0"},
    ]
    assert _load_dataset(out / "sft.jsonl", tmp_path).num_rows == 5

    only2 = export_run(
        project=project,
        kind="sft",
        options={"rounds": [2], "format": "parquet", "messages": False},
    )
    table = pq.read_table(only2 / "sft.parquet").to_pylist()
    assert [(r["round"], r["prompt"], r["completion"]) for r in table] == [
        (2, "prompt 0", "best 2.0"),
        (2, "prompt 1", "best 2.1"),
    ]
    assert _load_dataset(only2 / "sft.parquet", tmp_path).num_rows == 2


def test_labels_export_the_displayed_choice_and_no_strength_for_tie_or_both_bad(
    demo: dict[str, Any], artifacts: Path, tmp_path: Path
) -> None:
    """A rationale's letters are the annotator's: the row says which choice they saw
    (issue 15, item 6); tie and both bad carry no strength (item 7), also for a label
    stored with the 1 the UI used to send."""
    out = export_run(project=demo["project"], kind="labels")
    rows = _read_jsonl(out / "labels.jsonl")
    for row in rows:
        swap = {"a": "b", "b": "a"}
        expected = swap.get(row["choice"], row["choice"])
        assert row["displayed_choice"] == (
            expected if row["shown_swapped"] else row["choice"]
        )
        if row["choice"] in ("tie", "both_bad"):
            assert row["strength"] is None
    swapped = [r for r in rows if r["shown_swapped"]]
    assert [(r["choice"], r["displayed_choice"]) for r in swapped] == [("b", "a")]
    assert any(r["choice"] == "both_bad" for r in rows)
    assert "displayed_choice" in (out / "README.md").read_text()
    parquet = export_run(
        project=demo["project"], kind="labels", options={"format": "parquet"}
    )
    table = pq.read_table(parquet / "labels.parquet").to_pylist()
    assert [r["displayed_choice"] for r in table] == [
        r["displayed_choice"] for r in rows
    ]
    assert [r["strength"] for r in table] == [r["strength"] for r in rows]


def test_labels_export_pseudonymous_unless_revealed(
    demo: dict[str, Any], artifacts: Path, tmp_path: Path
) -> None:
    u1, u2, _u3 = demo["users"]
    out = export_run(project=demo["project"], kind="labels")
    rows = _read_jsonl(out / "labels.jsonl")
    assert (
        len(rows) == Label.objects.filter(comparison__project=demo["project"]).count()
    )
    names = {r["annotator"] for r in rows}
    assert all(re.fullmatch(r"ann-[0-9a-f]{12}", n) for n in names)
    assert len(names) == 4  # alice, bob, carol, dave (rejected label kept)
    assert "rejected" in {r["review_state"] for r in rows}
    text = (out / "labels.jsonl").read_text()
    assert "alice" not in text and "bob" not in text
    # Stable across exports, different per person, keyed by the secret.
    assert annotator_pseudonym(u1.pk) in names
    assert annotator_pseudonym(u1.pk) == annotator_pseudonym(u1.pk)
    assert annotator_pseudonym(u1.pk) != annotator_pseudonym(u2.pk)
    assert annotator_pseudonym(u1.pk) != annotator_pseudonym(u1.pk, secret="other")
    assert "pseudonymous" in (out / "README.md").read_text()
    assert _load_dataset(out / "labels.jsonl", tmp_path).num_rows == len(rows)

    revealed = export_run(
        project=demo["project"],
        kind="labels",
        options={"reveal_annotators": True, "format": "parquet"},
    )
    table = pq.read_table(revealed / "labels.parquet").to_pylist()
    assert {r["annotator"] for r in table} == {"alice", "bob", "carol", "dave"}
    assert _load_dataset(revealed / "labels.parquet", tmp_path).num_rows == len(rows)


# --- mechanics: streaming, progress, atomicity, CLI, validation --------------------


def test_progress_chunks_and_name_collision(
    demo: dict[str, Any], artifacts: Path
) -> None:
    seen: list[tuple[float, str]] = []
    first = export_run(
        project=demo["project"],
        kind="preferences",
        options=ExportOptions(chunk_size=2),
        progress=lambda f, m: seen.append((f, m)),
        now=lambda: NOW,
    )
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # 7 comparisons in chunks of 2: 4 chunk reports between start and finish.
    assert len(seen) == 1 + 4 + 1
    assert len(_read_jsonl(first / "preferences.jsonl")) == 4
    # Same second again: a new folder, the finished one is never overwritten.
    second = export_run(project=demo["project"], kind="preferences", now=lambda: NOW)
    assert second.name == first.name + "-2"
    assert not [p for p in (artifacts / "exports").iterdir() if p.name.startswith(".")]


def test_failed_export_leaves_nothing(
    demo: dict[str, Any], artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database went away")

    monkeypatch.setattr(export_rows, "_preference_texts", boom)
    with pytest.raises(RuntimeError):
        export_run(project=demo["project"], kind="preferences")
    assert list((artifacts / "exports").iterdir()) == []


def test_export_command(demo: dict[str, Any], tmp_path: Path) -> None:
    stdout = StringIO()
    call_command(
        "export",
        "--project",
        str(demo["project"].pk),
        "--kind",
        "preferences",
        "--format",
        "parquet",
        "--strings",
        "--min-agreement",
        "0.7",
        "--out",
        str(tmp_path / "cli"),
        stdout=stdout,
        stderr=StringIO(),
    )
    out = Path(stdout.getvalue().strip())
    assert out.parent == tmp_path / "cli"
    assert pq.read_table(out / "preferences.parquet").num_rows == 2
    card = (out / "README.md").read_text()
    assert "--format parquet --strings --min-agreement 0.7" in card


def test_validation(demo: dict[str, Any], artifacts: Path) -> None:
    p = demo["project"]
    with pytest.raises(ValidationFailed):
        export_run(project=p, kind="everything")
    with pytest.raises(ValidationFailed):
        export_run(project=p, kind="sft", options={"format": "csv"})
    with pytest.raises(ValidationFailed):
        export_run(project=p, kind="sft", options={"min_agreement": 2})
    with pytest.raises(ValidationFailed):
        export_run(project=p, kind="sft", options={"colour": "blue"})
    with pytest.raises(NotFound):
        export_run(project=10**9, kind="sft")
    assert export_run(project=p.pk, kind="sft").is_dir()  # an id works too


# --- TRL consumes the preference export ---------------------------------------------


def _tiny_tokenizer(texts: list[str]) -> Any:
    """A word-level tokenizer over the export's own words, with a ChatML-like chat
    template: enough for TRL's conversational preprocessing, no downloads."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<eos>", "<|im_start|>", "<|im_end|>"]
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    vocab = {tok: i for i, tok in enumerate([*specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    fast.add_special_tokens({"additional_special_tokens": specials[3:]})
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}"
        "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant "
        "{% endif %}"
    )
    return fast


def _texts(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        for key in ("prompt", "chosen", "rejected"):
            out += [m["content"] for m in r[key]] + [m["role"] for m in r[key]]
    return out


def _llama_config(tokenizer: Any, **kwargs: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **kwargs,
    )


def _params(model: Any) -> Any:
    import torch

    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.slow
def test_trl_reward_trainer_trains_on_export(
    demo: dict[str, Any], artifacts: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import LlamaForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    out = export_run(project=demo["project"], kind="preferences")
    data = out / "preferences.jsonl"
    dataset = _load_dataset(data, tmp_path)
    tokenizer = _tiny_tokenizer(_texts(_read_jsonl(data)))
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(_llama_config(tokenizer, num_labels=1))
    before = _params(model)
    args = RewardConfig(
        output_dir=str(tmp_path / "rm"),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        max_length=256,
        dataset_num_proc=None,
    )
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    # The export's margin column reaches the loss.
    assert "margin" in trainer.train_dataset.column_names
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(
        torch.tensor(result.training_loss)
    )
    assert not torch.equal(before, _params(model))


@pytest.mark.slow
def test_trl_dpo_trainer_trains_on_export(
    demo: dict[str, Any], artifacts: Path, tmp_path: Path
) -> None:
    import copy

    import torch
    from transformers import LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer

    out = export_run(project=demo["project"], kind="preferences")
    data = out / "preferences.jsonl"
    dataset = _load_dataset(data, tmp_path)
    tokenizer = _tiny_tokenizer(_texts(_read_jsonl(data)))
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config(tokenizer))
    # A model built from a config has no hub id to reload a reference from, so the
    # reference model is passed explicitly.
    ref = copy.deepcopy(model)
    before = _params(model)
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        max_length=256,
        dataset_num_proc=None,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(
        torch.tensor(result.training_loss)
    )
    assert not torch.equal(before, _params(model))

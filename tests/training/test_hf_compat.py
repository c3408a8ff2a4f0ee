"""A Pairloop reward model loads with ``AutoModelForSequenceClassification`` (after
``python -m training export-hf``) and scores exactly as Pairloop's own scorer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.conftest import (
    make_tokenizer,
    synthetic_pairs,
    tiny_bert_config,
    tiny_llama_config,
)
from training.data import Formatter
from training.reward_model import (
    META_FILE,
    RewardModelSpec,
    reward_model_from_config,
    save_weights,
    spec_dict,
)
from training.scoring import RewardScorer

ROOT = Path(__file__).resolve().parents[2]
MAX_LENGTH = 128


def _save_reward_model(
    directory: Path,
    kind: str,
    *,
    pooling: str = "mean",
    chat_template: bool = False,
    pad_is_eos: bool = False,
    bias: float = 0.0,
) -> Path:
    """A random tiny reward model saved as train_rm saves one."""
    torch.manual_seed(0)
    hf_config = tiny_bert_config() if kind == "encoder" else tiny_llama_config()
    spec = RewardModelSpec(kind=kind, pooling=pooling, base="tiny")
    model = reward_model_from_config(hf_config, spec)
    with torch.no_grad():
        model.head.weight.normal_(std=1.0)  # rewards of order 1, not 0.01
        model.head.bias.fill_(bias)
    directory.mkdir(parents=True)
    save_weights(model, directory)
    tokenizer = make_tokenizer(kind, chat_template)
    if pad_is_eos:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(str(directory))
    meta = {"reward_model": spec_dict(spec), "config": {"max_length": MAX_LENGTH}}
    (directory / META_FILE).write_text(json.dumps(meta))
    return directory


def _export(model_dir: Path, out: Path) -> dict:
    """The documented command, run as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "training", "export-hf", "--model", str(model_dir),
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _hf_scores(out: Path, kind: str, items, *, remote: bool) -> list[float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(
        str(out), trust_remote_code=remote
    )
    hf.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    # The ids Pairloop feeds its own model, right-padded in ONE batch with the
    # exported pad token: the load-bearing part for last-token pooling.
    formatter = Formatter(tokenizer, MAX_LENGTH, kind == "encoder")
    rows = [formatter.encode_item(conv, resp) for conv, resp in items]
    width = max(len(r) for r in rows)
    pad = hf.config.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    with torch.no_grad():
        logits = hf(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (len(rows), 1)
    return logits[:, 0].tolist()


def _items(n: int = 12, seed: int = 3):
    pairs = synthetic_pairs(n, seed=seed)
    # Lengths differ, so the batch is really padded.
    return [(p.conversation, p.response_a) for p in pairs] + [
        (p.conversation, p.response_b + " please help me") for p in pairs
    ]


def _pairloop_scores(model_dir: Path, items) -> list[float]:
    scorer = RewardScorer(model_dir, device="cpu")
    return scorer([c for c, _ in items], [r for _, r in items])


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("decoder", {}),
        ("decoder-pad-is-eos", {"pad_is_eos": True}),
        ("decoder-chat-template", {"chat_template": True, "pad_is_eos": True}),
    ],
)
def test_decoder_exports_as_standard_sequence_classification(tmp_path, case, kwargs):
    model_dir = _save_reward_model(tmp_path / "rm", "decoder", **kwargs)
    info = _export(model_dir, tmp_path / "hf")
    assert info["loader"] == "native"
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert "auto_map" not in config  # no remote code
    if kwargs.get("pad_is_eos"):
        assert info["added_pad_token"] == "<|pairloop_pad|>"
        assert config["pad_token_id"] != config["eos_token_id"]
    items = _items()
    ours = _pairloop_scores(model_dir, items)
    theirs = _hf_scores(tmp_path / "hf", "decoder", items, remote=False)
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-5
    assert max(ours) - min(ours) > 0.1  # a real spread, not all zeros


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_encoder_exports_with_its_pooling(tmp_path, pooling):
    model_dir = _save_reward_model(tmp_path / "rm", "encoder", pooling=pooling)
    info = _export(model_dir, tmp_path / "hf")
    assert info["loader"] == "remote_code" and info["pooling"] == pooling
    items = _items()
    ours = _pairloop_scores(model_dir, items)
    theirs = _hf_scores(tmp_path / "hf", "encoder", items, remote=True)
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-5
    assert max(ours) - min(ours) > 1e-3  # a real spread, far above the tolerance


def test_a_decoder_whose_head_bias_moved_keeps_it(tmp_path):
    """A standard score layer has no bias; a trained one (--center-coef) that is
    not 0 goes the remote-code way rather than losing it."""
    model_dir = _save_reward_model(tmp_path / "rm", "decoder", bias=0.75)
    info = _export(model_dir, tmp_path / "hf")
    assert info["loader"] == "remote_code" and info["pooling"] == "last"
    items = _items(6)
    ours = _pairloop_scores(model_dir, items)
    theirs = _hf_scores(tmp_path / "hf", "decoder", items, remote=True)
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-5


def test_export_refuses_a_non_model_and_a_used_directory(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "training", "export-hf", "--model", str(tmp_path),
         "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "pairloop.json missing" in bad.stderr
    model_dir = _save_reward_model(tmp_path / "rm", "decoder")
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    again = subprocess.run(
        [sys.executable, "-m", "training", "export-hf", "--model", str(model_dir),
         "--out", str(used)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 2 and "not empty" in again.stderr

"""``train-rm`` / ``eval-rm`` usability: help from the config, the --skip-invalid
hint, progress in pairs (issue 15 item 14)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from training.__main__ import main
from training.cli_rm import CONFIG_FLAGS, _PairBars
from training.config import RewardConfig, config_field
from training.train_rm import train

from .conftest import save_tiny_base, synthetic_pairs

FLAGS = {
    "--epochs": "num_epochs",
    "--lr": "learning_rate",
    "--batch-size": "batch_size",
    "--max-length": "max_length",
    "--warmup-ratio": "warmup_ratio",
    "--eval-fraction": "eval_fraction",
    "--seed": "seed",
}


def help_text(capsys: pytest.CaptureFixture[str], command: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    # argparse wraps lines; compare with whitespace collapsed.
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def test_train_rm_help_shows_config_help_and_defaults(capsys) -> None:
    text = help_text(capsys, "train-rm")
    for flag, name in FLAGS.items():
        default, help_ = config_field(name)
        assert help_, name
        words = re.sub(r"\s+", " ", help_)
        assert f"{flag} {flag[2:].upper().replace('-', '_')} {words}" in text, flag
        assert f"{words} (default: {default})" in text, flag
    # Required and unset options do not claim a default.
    assert "(default: None)" not in text and "(default: False)" not in text


def test_cli_flags_map_onto_real_config_fields() -> None:
    defaults = RewardConfig()
    for name in CONFIG_FLAGS.values():
        assert hasattr(defaults, name)


def test_a_bad_line_refusal_mentions_skip_invalid(tmp_path: Path, capsys) -> None:
    good = {"prompt": "q", "response_a": "x", "response_b": "y", "p_a": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "p_a": 2}) + "\n")
    args = ["train-rm", "--pairs", str(bad), "--out", str(tmp_path / "v")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "--skip-invalid" in err
    # A file-level problem is not helped by skipping lines: no hint there.
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet\n")
    assert main(["train-rm", "--pairs", str(fake), "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "not a readable Parquet file" in err and "--skip-invalid" not in err


def test_training_counts_pairs_per_phase(tmp_path: Path) -> None:
    base = save_tiny_base(tmp_path / "base", "encoder")
    pairs = synthetic_pairs(40, seed=3)
    extra = synthetic_pairs(10, seed=4)
    config = RewardConfig(
        base=str(base), num_epochs=1, batch_size=8, max_length=48, eval_fraction=0.2
    )
    calls: list[tuple[str, int, int]] = []
    result = train(pairs, config, eval_pairs=extra, counter=lambda *c: calls.append(c))
    phases = [c[0] for c in calls]
    assert phases == sorted(phases, key=["train", "eval", "extra_eval"].index)
    last = {phase: (done, total) for phase, done, total in calls}
    trained = result.metrics["train"]["pairs_seen"]
    assert last["train"] == (trained, trained)
    held = result.metrics["eval"]["n"]
    assert last["eval"] == (held, held) and last["extra_eval"] == (10, 10)
    # Counts only grow within a phase, one call per batch.
    train_counts = [d for p, d, _ in calls if p == "train"]
    assert train_counts == sorted(train_counts) and len(train_counts) == -(
        -trained // 8
    )


def test_pair_bars_count_pairs_not_permille() -> None:
    made: list[dict] = []

    class FakeBar:
        def __init__(self, **kw: object) -> None:
            self.n, self.kw, self.postfix = 0, kw, ""
            made.append(kw)

        def update(self, k: int) -> None:
            self.n += k

        def set_postfix_str(self, text: str, refresh: bool) -> None:
            self.postfix = text

        def close(self) -> None:
            pass

    bars = _PairBars(FakeBar, "train-rm")
    bars.count("train", 8, 20)
    bars.count("train", 16, 20)
    assert bars.bar.n == 16
    bars.message(0.5, "step 2/3")
    assert bars.bar.postfix == "step 2/3"
    bars.count("eval", 4, 4)
    assert [m["total"] for m in made] == [20, 4]
    assert {m["unit"] for m in made} == {"pair"}
    assert made[1]["desc"] == "train-rm eval"


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_train_and_eval_on_a_preference_export(
    tmp_path: Path, fmt: str, capsys
) -> None:
    """train-rm and eval-rm read the preference export as labelapp writes it
    (mean strengths, p_chosen, messages columns)."""
    from .test_formats import preference_schema, write_export

    rows = []
    for i, p in enumerate(synthetic_pairs(48, seed=5)):
        rows.append(
            {
                "prompt": list(p.conversation),
                "chosen": [{"role": "assistant", "content": p.response_a}],
                "rejected": [{"role": "assistant", "content": p.response_b}],
                "p_a": 2 / 3,
                "p_chosen": 2 / 3,
                "agreement": 1 / 3,
                "n_labels": 3,
                "strength": 2.6667,
                "margin": 0.1852,
                "comparison_id": i,
                "prompt_id": i,
                "chosen_id": 2 * i,
                "rejected_id": 2 * i + 1,
                "chosen_is_a": True,
                "round": None,
                "strategy": "",
                "origin": "import",
            }
        )
    export = write_export(
        tmp_path, "demo-preferences", fmt, rows, preference_schema(True)
    )
    base = save_tiny_base(tmp_path / "base", "encoder")
    out = tmp_path / "v1"
    code = main(
        ["train-rm", "--pairs", str(export), "--base", str(base), "--out", str(out),
         "--batch-size", "16", "--max-length", "48"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "‰" not in captured.err and "pair" in captured.err
    assert main(["eval-rm", "--model", str(out), "--pairs", str(export)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 48 and metrics["skipped_invalid"] == 0
    assert set(metrics["accuracy_by_strength"]) <= {"3"}

"""``torchrun --nproc_per_node 2 -m training train-rm`` (gloo, CPU) equals one
process (issue 19 item 3): same seed, same global batch, real processes.

Tolerance: 1e-4 on every weight the loss can move and on the held-out log loss. The two runs do the
same arithmetic except for the order of float32 summation (two half-batch
gradients averaged by the all-reduce instead of one batch; per-rank padding;
different thread counts), which moves weights by ~1e-7 per step; 1e-4 leaves
room for that over a few dozen steps while catching any real difference (a
wrong shard, an unsynchronised gradient or a wrong weight moves them by ~1e-3+).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.data import Pair

from .conftest import save_tiny_base, synthetic_pairs

TOL = 1e-4


def _write_pairs(path: Path, pairs: list[Pair]) -> None:
    with path.open("w") as f:
        for p in pairs:
            rec = {
                "id": p.id,
                "prompt": p.conversation,
                "response_a": p.response_a,
                "response_b": p.response_b,
                "p_a": p.p_a,
                "strength": p.strength,
            }
            f.write(json.dumps(rec) + "\n")


def _weights(version: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(version.glob("*.safetensors")):
        out.update(load_file(str(f)))
    assert out, f"no weights in {version}"
    return out


# Weights the pairwise loss cannot move (see the test), per base kind.
FREE = {
    "encoder": {"head.bias", "backbone.encoder.layer.1.output.LayerNorm.bias"},
    "decoder": {"head.bias"},
}


def one_and_two(common: list[str], tmp_path: Path, timeout: int = 240):
    """``python -m training *common`` in one process (into tmp_path/one) and under
    ``torchrun --standalone --nproc_per_node 2`` (into tmp_path/two); the
    torchrun run's CompletedProcess (checked by the caller)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(
        [sys.executable, "-m", "training", *common, "--out", str(one)],
        check=True, env=env, timeout=timeout, capture_output=True,
    )  # fmt: skip
    run = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", "2", "-m", "training", *common, "--out", str(two),
        ],
        env=env, timeout=timeout, capture_output=True, text=True,
    )  # fmt: skip
    return one, two, run


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["encoder", "decoder"])  # decoder: prefix reuse
def test_torchrun_two_cpu_ranks_match_one_process(tmp_path: Path, kind: str) -> None:
    base = save_tiny_base(tmp_path / "base", kind)
    pairs_file = tmp_path / "pairs.jsonl"
    # 45 pairs: the held-out split leaves a training set whose last global batch
    # is uneven, so the shard weighting is exercised.
    _write_pairs(pairs_file, synthetic_pairs(45, seed=7))
    common = [
        "train-rm", "--pairs", str(pairs_file), "--base", str(base),
        "--epochs", "2", "--batch-size", "8", "--grad-accum", "2", "--lr", "1e-3",
        "--max-length", "48", "--eval-fraction", "0.2", "--seed", "3",
        "--length-control", "--device", "cpu",
    ]  # fmt: skip
    one, two, run = one_and_two(common, tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "'world_size': 2" in run.stdout and "'global_batch_size': 8" in run.stdout

    meta_one = json.loads((one / "pairloop.json").read_text())
    meta_two = json.loads((two / "pairloop.json").read_text())
    assert meta_one["distributed"]["world_size"] == 1
    assert meta_two["distributed"]["world_size"] == 2
    assert meta_two["distributed"]["global_batch_size"] == 8
    assert meta_two["distributed"]["per_rank_batch_size"] == 4

    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    diffs = {k: (w1[k].float() - w2[k].float()).abs().max().item() for k in w1}
    # A constant added to both rewards cancels in r_a - r_b: the exact gradient of
    # the head's bias and of the last layer's LayerNorm bias (a shift of the
    # pooled vector) is 0, so theirs is float noise, which Adam divides by its own
    # size into steps of ±lr. They may differ by at most lr·steps and change no
    # reward difference (the eval metrics below match).
    free = FREE[kind]
    lr, steps = 1e-3, meta_two["metrics"]["train"]["steps"]
    for key, diff in diffs.items():
        assert diff < (lr * steps if key in free else TOL), (key, diff)
    m1, m2 = meta_one["metrics"], meta_two["metrics"]
    assert m1["eval"]["n"] == m2["eval"]["n"] > 0
    assert abs(m1["eval"]["log_loss"] - m2["eval"]["log_loss"]) < TOL
    assert m1["eval"]["accuracy"] == m2["eval"]["accuracy"]
    assert abs(m1["train"]["first_loss"] - m2["train"]["first_loss"]) < TOL
    assert abs(m1["train"]["final_loss"] - m2["train"]["final_loss"]) < TOL
    assert abs(m1["train"]["length_beta"] - m2["train"]["length_beta"]) < TOL
    assert m1["train"]["length_beta"] != 0.0
    # Only rank 0 wrote: no leftover temporary directories.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------- train-policy


def _policy_data(tmp_path: Path) -> tuple[Path, Path]:
    """Varied SFT examples and DPO pairs (different lengths), so that a wrong
    shard, a per-rank token mean or an unsynchronised step shows in the weights."""
    import random

    from tests.training._bon_fixtures import WORDS

    rng = random.Random(5)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choices(WORDS[:15], k=rng.randint(lo, hi)))

    sft, dpo = [], []
    for _ in range(12):
        prompt = [{"role": "user", "content": words(2, 6)}]
        sft.append(
            {"messages": [*prompt, {"role": "assistant", "content": words(2, 9)}]}
        )
        dpo.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": words(2, 8)}],
                "rejected": [{"role": "assistant", "content": words(2, 8)}],
            }
        )
    sft_file, dpo_file = tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl"
    sft_file.write_text("".join(json.dumps(r) + "\n" for r in sft))
    dpo_file.write_text("".join(json.dumps(r) + "\n" for r in dpo))
    return sft_file, dpo_file


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_torchrun_train_policy_two_cpu_ranks_match_one_process(tmp_path: Path) -> None:
    """SFT then DPO through TRL's trainers, data-parallel on 2 gloo ranks with a
    per-rank batch of 2, against one process with a batch of 4: the same steps
    on the same examples (tolerance TOL as above: float summation order only)."""
    from tests.training._bon_fixtures import tiny_model, tiny_tokenizer

    base = tmp_path / "base"
    tiny_model(seed=0).save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    sft_file, dpo_file = _policy_data(tmp_path)
    common = [
        "train-policy", "--mode", "sft+dpo", "--base", str(base),
        "--sft-data", str(sft_file), "--dpo-data", str(dpo_file),
        "--sft-lr", "1e-3", "--dpo-lr", "1e-3", "--sft-epochs", "2",
        "--dpo-epochs", "1", "--batch-size", "4", "--seed", "3", "--device", "cpu",
    ]  # fmt: skip
    one, two, run = one_and_two(common, tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count("saved ") == 1  # rank 0 alone reports
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m1["distributed"]["world_size"] == 1
    assert m2["distributed"] == {
        "world_size": 2, "backend": "gloo", "global_batch_size": 4,
        "per_rank_batch_size": 2,
    }  # fmt: skip
    for phase in ("sft", "dpo"):
        assert m1[phase]["steps"] == m2[phase]["steps"] > 0, phase
        assert abs(m1[phase]["first_loss"] - m2[phase]["first_loss"]) < TOL, phase
        assert abs(m1[phase]["final_loss"] - m2[phase]["final_loss"]) < TOL, phase
    start = _weights(base)
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    moved = max((w1[k].float() - start[k].float()).abs().max().item() for k in w1)
    assert moved > 20 * TOL  # training moved the weights well beyond the tolerance
    for key in w1:
        diff = (w1[key].float() - w2[key].float()).abs().max().item()
        assert diff < TOL, (key, diff)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused() -> None:
    from training.config import PolicyConfig
    from training.train_policy import per_rank_batch

    assert per_rank_batch(PolicyConfig(batch_size=8), 2) == 4
    with pytest.raises(ValueError, match="batch_size 6 does not split over 4"):
        per_rank_batch(PolicyConfig(batch_size=6), 4)


# ------------------------------------------------- launching from a worker


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_launch_names_the_rank_that_failed(tmp_path: Path) -> None:
    from training.distributed import LaunchError, launch

    with pytest.raises(LaunchError, match=r"rank \d of 2 exited with code 2: .*SFT"):
        launch(["train-policy", "--out", str(tmp_path / "v")], 2, timeout=120)
    assert not (tmp_path / "v").exists()


@pytest.mark.timeout(180)
def test_ranks_die_with_the_process_that_launched_them(tmp_path: Path) -> None:
    """A Celery worker killed with kill -9 must not leave training ranks behind
    (holding a GPU, writing a version the retry writes again)."""
    import signal
    import time

    from tests.training._bon_fixtures import tiny_model, tiny_tokenizer

    base = tmp_path / "base"
    tiny_model(seed=0).save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    sft_file, _ = _policy_data(tmp_path)
    argv = [
        "train-policy", "--base", str(base), "--sft-data", str(sft_file),
        "--sft-epochs", "100000", "--batch-size", "2", "--device", "cpu",
        "--out", str(tmp_path / "v"),
    ]  # fmt: skip
    script = f"import sys; from training.distributed import launch; launch({argv!r}, 2)"
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 60
        while len(ranks := _children(parent.pid)) < 2:
            assert time.monotonic() < deadline, "the ranks did not start"
            assert parent.poll() is None, "the launcher exited early"
            time.sleep(0.2)
        time.sleep(3)  # into training
        assert all(_alive(r) for r in ranks)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while any(_alive(r) for r in ranks):
            assert time.monotonic() < deadline, f"ranks {ranks} outlived the launcher"
            time.sleep(0.2)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert not (tmp_path / "v").exists()


def test_train_rm_config_file_refuses_setting_flags_beside_it(tmp_path: Path, capsys):
    from training.__main__ import main as cli

    pairs_file = tmp_path / "pairs.jsonl"
    _write_pairs(pairs_file, synthetic_pairs(4))
    settings = tmp_path / "config.json"
    settings.write_text(json.dumps({"batch_size": 4}))
    argv = ["train-rm", "--pairs", str(pairs_file), "--out", str(tmp_path / "v")]
    assert cli([*argv, "--config", str(settings), "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    settings.write_text(json.dumps({"batch_size": 4, "shiny": 1}))
    assert cli([*argv, "--config", str(settings)]) == 2
    assert "unknown settings ['shiny']" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()

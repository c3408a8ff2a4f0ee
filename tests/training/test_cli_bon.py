"""``python -m training best-of-n``: prompt formats, outputs, exit status 2."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from tests.training._bon_fixtures import DATA, tiny_model, tiny_tokenizer
from training.__main__ import main
from training.cli_bon import PromptFileError, read_prompts


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-policy")
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def write_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_reads_every_prompt_format(tmp_path):
    records = [
        {"prompt": "why is the cat big ?"},
        {"messages": [{"role": "user", "content": "hello"}]},
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "dropped: it gets re-sampled"},
            ]
        },
        {"question_id": 81, "turns": ["first turn", "second turn"]},
        {"question_id": "x", "turns": [{"content": "arena prompt"}]},
    ]
    path = tmp_path / "p.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        for r in records:
            handle.write(json.dumps(r) + "\n\n")  # blank lines are skipped
    prompts = read_prompts(path)
    assert [n for n, _ in prompts] == [1, 3, 5, 7, 9]
    assert [c for _, c in prompts] == [
        [{"role": "user", "content": "why is the cat big ?"}],
        [{"role": "user", "content": "hello"}],
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "first turn"}],
        [{"role": "user", "content": "arena prompt"}],
    ]


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("mt-bench-questions.jsonl", 80),
        ("vicuna-bench-questions.jsonl", 80),
        ("arena-hard-questions.jsonl.gz", 500),
    ],
)
def test_reads_the_shared_prompt_sets(name, count):
    if not (DATA / name).exists():
        pytest.skip(f"{DATA / name} is absent")
    prompts = read_prompts(DATA / name)
    assert len(prompts) == count
    assert all(c[0]["content"].strip() for _, c in prompts)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "p.jsonl:2: "),
        ('{"foo": 1}', "p.jsonl:2: expected a 'prompt'"),
        ('{"prompt": "  "}', "p.jsonl:2: the prompt is empty"),
        ('{"messages": [{"role": "user"}]}', "p.jsonl:2: each message"),
        ('{"turns": []}', "p.jsonl:2: 'turns' must be"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n' + line + "\n")
    with pytest.raises(PromptFileError, match=message):
        read_prompts(path)


def test_round_end_to_end_writes_all_outputs(tmp_path, tiny_policy, capsys):
    prompts = write_lines(
        tmp_path / "p.jsonl", [{"prompt": "why is the cat big ?"}, {"prompt": "how ?"}]
    )
    out = tmp_path / "out"
    code = main(
        ["best-of-n", "--prompts", str(prompts), "--policy", tiny_policy, "--n", "3",
         "--max-new-tokens", "6", "--out", str(out), "--pairs-per-prompt", "2"]
    )  # fmt: skip
    assert code == 0
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6
    assert {s["prompt_index"] for s in samples} == {0, 1}
    assert all(s["score"] is None for s in samples)  # round 0: no reward model
    pairs = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert pairs and {p["strategy"] for p in pairs} == {"random"}
    assert pairs[0]["messages"][0]["role"] == "user"
    assert (out / "sft.jsonl").read_text() == ""
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == 6 and stats["config"]["n"] == 3
    assert "6 samples for 2 prompts" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n", "0"], "n must be an integer >= 1"),
        (["--backend", "tpu"], "unknown sampler backend 'tpu'"),
        (["--policy", "builtin:nope"], "unknown builtin model"),
        (["--adaptive"], "--adaptive needs --reward"),
        (["--reward", "/no/such/dir"], "no such directory"),
        (["--pair-mix", "worst=1"], "unknown pair strategies"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(tmp_path, tiny_policy, capsys, extra,
                                               message):  # fmt: skip
    prompts = write_lines(tmp_path / "p.jsonl", [{"prompt": "hello"}])
    argv = ["best-of-n", "--prompts", str(prompts), "--policy", tiny_policy,
            "--max-new-tokens", "4", "--out", str(tmp_path / "o"), *extra]  # fmt: skip
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_too_long_prompt_exits_2_naming_the_line(tmp_path, tiny_policy, capsys):
    prompts = write_lines(
        tmp_path / "p.jsonl", [{"prompt": "hello"}, {"prompt": "the cat " * 100}]
    )
    argv = ["best-of-n", "--prompts", str(prompts), "--policy", tiny_policy,
            "--max-new-tokens", "4", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "p.jsonl:2:" in err and "context of 128 tokens" in err


def test_empty_prompt_file_exits_2(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text("\n\n")
    argv = ["best-of-n", "--prompts", str(tmp_path / "p.jsonl"), "--out", "o"]
    assert main(argv) == 2
    assert "no prompts" in capsys.readouterr().err


def test_unreadable_reward_directory_exits_2_before_sampling(
    tmp_path, tiny_policy, capsys
):
    prompts = write_lines(tmp_path / "p.jsonl", [{"prompt": "hello"}])
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    argv = ["best-of-n", "--prompts", str(prompts), "--policy", tiny_policy,
            "--reward", str(not_a_model), "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert "not-a-model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_progress_per_batch_and_tokens_per_second(tmp_path, tiny_policy, capsys):
    from training.rejection import RoundConfig, run_round
    from training.sampling import make_sampler

    prompts = [[{"role": "user", "content": w}] for w in ("cats ?", "dogs ?")]
    sampler = make_sampler("transformers", tiny_policy, max_batch_rows=3)
    calls = []
    run_round(
        prompts,
        sampler,
        None,
        RoundConfig(n=3, max_new_tokens=4, pairs_per_prompt=0),
        on_samples=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(3, 6), (6, 6)]  # one report per batch of 3 rows, exact
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "cats ?"}])
    code = main(
        ["best-of-n", "--prompts", str(path), "--policy", tiny_policy, "--n", "2",
         "--max-new-tokens", "4", "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"sampling: \d+ tokens in [\d.]+ s, ([\d.]+|-) tokens/s", out)

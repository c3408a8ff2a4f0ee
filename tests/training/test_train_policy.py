"""train-policy on a tiny random Llama: SFT and DPO learn, the saved directory
reloads and generates identically, bad input exits 2 and writes nothing."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from tests.training._bon_fixtures import tiny_model, tiny_tokenizer
from training.config import PolicyConfig
from training.eval_policy import sequence_logprobs
from training.train_policy import PolicyDataError, prepare, read_dpo, train_policy

PROMPT = [{"role": "user", "content": "why is the cat big ?"}]
PROMPT2 = [
    {"role": "system", "content": "answer fast ."},
    {"role": "user", "content": "what is a dog ?"},
]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    d = tmp_path / "base"
    tiny_model(seed=0).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def sft_records(n: int = 8) -> list[dict]:
    return [
        {
            "messages": [
                *(PROMPT if i % 2 else PROMPT2),
                {"role": "assistant", "content": "the cat sat on the mat ."},
            ],
            "reward": 1.0,
        }
        for i in range(n)
    ]


def dpo_records(n: int = 8) -> list[dict]:
    return [
        {
            "prompt": PROMPT if i % 2 else PROMPT2,
            "chosen": [{"role": "assistant", "content": "the cat sat ."}],
            "rejected": [{"role": "assistant", "content": "a dog ran fast ."}],
        }
        for i in range(n)
    ]


def fast(**kw) -> PolicyConfig:
    kw.setdefault("sft_learning_rate", 1e-2)
    kw.setdefault("dpo_learning_rate", 1e-2)
    kw.setdefault("sft_epochs", 2)
    kw.setdefault("dpo_epochs", 2)
    kw.setdefault("batch_size", 4)
    return PolicyConfig(**kw)


def completion_nll(model, tok, prompt, reply) -> float:
    p = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False)
    full = tok.apply_chat_template(
        [*prompt, {"role": "assistant", "content": reply}], return_dict=False
    )
    return -sequence_logprobs(model, [p], [full[len(p) :]])[0]


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_sft_lowers_the_loss_moves_the_weights_and_saves_a_loadable_dir(tmp_path, base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_jsonl(tmp_path / "sft.jsonl", sft_records())
    before_model = AutoModelForCausalLM.from_pretrained(base)
    tok = tiny_tokenizer()
    reply = "the cat sat on the mat ."
    before = completion_nll(before_model, tok, PROMPT, reply)
    out = tmp_path / "v1"
    result = train_policy(prepare(fast(mode="sft", base=str(base)), [str(data)]), out)
    after = completion_nll(result.model, tok, PROMPT, reply)
    assert after < before / 2
    m = result.metrics["sft"]
    assert m["final_loss"] < m["first_loss"] and m["tokens_per_s"] > 0
    w0, w1 = weights(before_model), weights(result.model)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)

    # A standard HF directory: weights, tokenizer with its chat template, the
    # config, the data fingerprint and the metrics beside them.
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "policy_config.json"} <= names
    assert {"data_fingerprint.json", "metrics.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".v1.tmp")]
    saved = json.loads((out / "policy_config.json").read_text())
    assert saved["mode"] == "sft" and saved["sft_learning_rate"] == 1e-2
    fp = json.loads((out / "data_fingerprint.json").read_text())
    assert fp["examples"]["sft"]["count"] == 8 and len(fp["files"]) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"loss", "learning_rate"} <= set(metrics["log"][0])

    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    rtok = AutoTokenizer.from_pretrained(out)
    assert rtok.chat_template == tok.chat_template
    ids = torch.tensor(
        [
            rtok.apply_chat_template(
                PROMPT, add_generation_prompt=True, return_dict=False
            )
        ]
    )
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        a = result.model.generate(ids, **kw)
        b = reloaded.generate(ids, **kw)
    assert torch.equal(a, b)


def test_dpo_prefers_chosen_over_rejected(tmp_path, base):
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "dpo.jsonl", dpo_records())
    tok = tiny_tokenizer()
    before_model = AutoModelForCausalLM.from_pretrained(base)

    def margin(model) -> float:
        return completion_nll(model, tok, PROMPT, "a dog ran fast .") - completion_nll(
            model, tok, PROMPT, "the cat sat ."
        )

    before = margin(before_model)
    result = train_policy(
        prepare(fast(mode="dpo", base=str(base)), [], [str(data)]), tmp_path / "v1"
    )
    m = result.metrics["dpo"]
    assert m["first_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference
    assert m["final_loss"] < m["first_loss"]
    assert margin(result.model) > before + 1.0
    w0, w1 = weights(before_model), weights(result.model)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


@pytest.mark.slow
def test_sft_then_dpo_lora_merged_restart_from_latest_and_seed_reproducible(
    tmp_path, base
):
    from transformers import AutoModelForCausalLM

    sft = write_jsonl(tmp_path / "sft.jsonl", sft_records())
    dpo = write_jsonl(tmp_path / "dpo.jsonl", dpo_records())
    cfg = dict(mode="sft+dpo", base=str(base), lora=True, lora_r=4, lora_alpha=8)
    cfg |= dict(sft_learning_rate=5e-2, dpo_learning_rate=5e-2)
    one = train_policy(prepare(fast(**cfg), [str(sft)], [str(dpo)]), tmp_path / "a")
    two = train_policy(prepare(fast(**cfg), [str(sft)], [str(dpo)]), tmp_path / "b")
    assert one.metrics["lora"] and {"sft", "dpo"} <= set(one.metrics)
    w1, w2 = weights(one.model), weights(two.model)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # same seed, same weights
    # Merged on save: a plain Llama without adapter files.
    names = {p.name for p in (tmp_path / "a").iterdir()}
    assert "adapter_config.json" not in names
    w0 = weights(AutoModelForCausalLM.from_pretrained(base))
    assert set(w0) == set(w1) and any(not torch.equal(w0[k], w1[k]) for k in w0)

    latest = train_policy(
        prepare(
            fast(mode="sft", base=str(base), restart_from="latest",
                 latest=str(tmp_path / "a")),
            [str(sft)],
        ),
        tmp_path / "c",
    )  # fmt: skip
    saved = json.loads((tmp_path / "c" / "policy_config.json").read_text())
    assert saved["start"] == str(tmp_path / "a")
    assert latest.metrics["lora"] is False


# ------------------------------------------------------------------ bad input


def run_cli(*argv: str) -> int:
    from training.__main__ import main

    return main(["train-policy", *argv])


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("", "empty file"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n{oops\n', ":2: bad JSON"),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "robot", "content": "x"},
                        {"role": "assistant", "content": "y"},
                    ]
                }
            )
            + "\n",
            ":1: field 'messages[0].role': role 'robot'",
        ),
        (
            json.dumps(sft_records(1)[0])
            + "\n"
            + json.dumps(
                {"messages": [*PROMPT, {"role": "assistant", "content": "cat " * 300}]}
            )
            + "\n",
            ":2: field 'completion': the example is",
        ),
        (json.dumps({"messages": PROMPT}) + "\n", ":1: field 'messages': must end"),
        (json.dumps({"text": "x"}) + "\n", ":1: expected 'messages'"),
    ],
    ids=["empty", "bad-json", "role", "too-long", "no-reply", "unknown-format"],
)
def test_bad_sft_input_exits_2_names_the_place_and_writes_nothing(
    tmp_path, base, capsys, content, where
):
    data = tmp_path / "sft.jsonl"
    data.write_text(content)
    out = tmp_path / "out"
    code = run_cli("--data", str(data), "--base", str(base), "--out", str(out))
    err = capsys.readouterr().err
    assert code == 2
    assert f"{data}" in err and where in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "sft.jsonl"]


def test_bad_dpo_input_and_existing_out(tmp_path, base, capsys):
    bad = write_jsonl(
        tmp_path / "dpo.jsonl",
        [*dpo_records(1), {"prompt": PROMPT, "chosen": [{"role": "tool",
                                                         "content": "x"}],
                           "rejected": "no"}],
    )  # fmt: skip
    code = run_cli(
        "--mode", "dpo", "--data", str(bad), "--base", str(base),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    assert f"{bad}:2: field 'chosen[0].role'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    good = write_jsonl(tmp_path / "sft.jsonl", sft_records(2))
    code = run_cli(
        "--data", str(good), "--base", str(base), "--out", str(tmp_path / "taken")
    )
    assert code == 2 and "already exists" in capsys.readouterr().err
    code = run_cli("--mode", "sft+dpo", "--data", str(good), "--base", str(base),
                   "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and "needs SFT data" in capsys.readouterr().err


def test_dpo_reader_accepts_the_pairloop_and_trl_formats(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    records = [
        {"prompt": "hi", "chosen": "good", "rejected": "bad"},
        {"chosen": [*PROMPT, {"role": "assistant", "content": "c"}],
         "rejected": [*PROMPT, {"role": "assistant", "content": "r"}]},
        {"messages": PROMPT, "response_a": "a", "response_b": "b", "p_a": 0.0},
        {"prompt": PROMPT, "response_a": "a", "response_b": "b", "p_a": 0.5},
    ]  # fmt: skip
    path.write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
    )
    counts: dict[str, int] = {}
    pairs = read_dpo(path, counts)
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("good", "bad"),
        ("c", "r"),
        ("b", "a"),
    ]
    assert pairs[0].prompt == [{"role": "user", "content": "hi"}]
    assert counts == {"ties_skipped": 1}
    with pytest.raises(PolicyDataError, match="implicit prompt"):
        read_dpo(
            write_jsonl(
                tmp_path / "x.jsonl", [{"chosen": PROMPT, "rejected": PROMPT2}]
            ),
            {},
        )


def test_sft_reader_accepts_the_prompt_completion_export(tmp_path, base):
    data = write_jsonl(
        tmp_path / "export.jsonl",
        [
            {"prompt": "why is the cat big ?", "completion": "the cat sat .",
             "reward": 0.3, "round": 1, "prompt_id": 4, "response_id": 9},
            {"prompt": PROMPT, "completion": [{"role": "assistant", "content": "a"}]},
        ],
    )  # fmt: skip
    prepared = prepare(PolicyConfig(mode="sft", base=str(base)), [str(data)])
    assert [e.completion for e in prepared.sft] == ["the cat sat .", "a"]
    assert prepared.max_length == 128  # capped by the tiny model's context


def test_config_file_gives_every_setting_and_refuses_flags_beside_it(
    tmp_path: Path, base: Path, capsys
) -> None:
    from training.__main__ import main as cli

    data = write_jsonl(tmp_path / "sft.jsonl", sft_records(4))
    settings = tmp_path / "training_config.json"
    settings.write_text(json.dumps({**fast().to_dict(), "base": str(base)}))
    out = tmp_path / "v1"
    argv = ["train-policy", "--sft-data", str(data), "--out", str(out)]
    assert cli([*argv, "--config", str(settings), "--seed", "9"]) == 2
    assert "drop --seed" in capsys.readouterr().err and not out.exists()
    settings.write_text(json.dumps({"batch_size": 4, "shiny": 1}))
    assert cli([*argv, "--config", str(settings)]) == 2
    assert "unknown settings ['shiny']" in capsys.readouterr().err
    settings.write_text(json.dumps({**fast().to_dict(), "base": str(base)}))
    assert cli([*argv, "--config", str(settings)]) == 0
    saved = json.loads((out / "policy_config.json").read_text())
    assert saved["sft_learning_rate"] == 1e-2 and saved["batch_size"] == 4

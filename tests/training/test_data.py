import gzip
import json
from pathlib import Path

import pytest

from training.data import Formatter, Pair, PairFormatError, read_pairs

from .conftest import make_tokenizer

HH = (
    "\n\nHuman: how do I bake bread?\n\nAssistant: What kind?"
    "\n\nHuman: sourdough\n\nAssistant: "
)


def write(path: Path, records: list, gz: bool = False) -> Path:
    lines = "".join(
        (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records
    )
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(lines)
    else:
        path.write_text(lines)
    return path


def test_reads_all_three_formats(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pairs.jsonl.gz",
        [
            {"prompt": "hi", "chosen": "hello", "rejected": "go away"},
            {
                "prompt": [{"role": "user", "content": "hi"}],
                "chosen": [{"role": "assistant", "content": "hello"}],
                "rejected": [{"role": "assistant", "content": "no"}],
            },
            {"chosen": HH + "Use a starter.", "rejected": HH + "No idea."},
            {
                "messages": [{"role": "user", "content": "q"}],
                "response_a": "x",
                "response_b": "y",
                "p_a": 0.25,
                "strength": 2,
                "id": "abc",
            },
            {"prompt": "q2", "response_a": "x", "response_b": "y", "p_a": 1},
        ],
        gz=True,
    )
    pairs = read_pairs(path)
    assert len(pairs) == 5
    assert pairs[0].conversation == ({"role": "user", "content": "hi"},)
    assert (pairs[0].response_a, pairs[0].response_b, pairs[0].p_a) == (
        "hello",
        "go away",
        1.0,
    )
    assert pairs[1].response_b == "no"
    hh = pairs[2]
    assert [m["role"] for m in hh.conversation] == ["user", "assistant", "user"]
    assert hh.conversation[-1]["content"] == "sourdough"
    assert (hh.response_a, hh.response_b) == ("Use a starter.", "No idea.")
    assert (pairs[3].p_a, pairs[3].strength, pairs[3].id) == (0.25, 2, "abc")
    assert pairs[4].id  # content hash when no id is given
    assert read_pairs(path, limit=2) == pairs[:2]


BAD_CASES = [
    ({"prompt": "q", "response_a": "x", "response_b": "y"}, "p_a", "missing"),
    ({"prompt": "q", "response_a": "x", "response_b": "y", "p_a": 1.5}, "p_a", "1.5"),
    ({"prompt": "q", "response_a": "x", "response_b": "y", "p_a": -0.1}, "p_a", ""),
    ({"prompt": "q", "response_a": "x", "response_b": "y", "p_a": "1"}, "p_a", ""),
    ({"prompt": "q", "response_a": " ", "response_b": "y", "p_a": 1}, "response_a", ""),
    ({"prompt": "", "response_a": "x", "response_b": "y", "p_a": 1}, "prompt", ""),
    ({"response_a": "x", "response_b": "y", "p_a": 1}, "prompt", "missing"),
    ({"prompt": "q", "response_a": "x", "p_a": 1}, "response_b", "missing"),
    (
        {"prompt": "q", "response_a": "x", "response_b": "y", "p_a": 1, "strength": 7},
        "strength",
        "7",
    ),
    ({"prompt": "q", "chosen": "x"}, "rejected", "missing"),
    ({"prompt": "q", "chosen": "", "rejected": "y"}, "chosen", "empty"),
    ({"chosen": HH + "ok", "rejected": HH}, "rejected", "empty"),
    ({"chosen": "no turns here", "rejected": "x"}, "chosen", "HH"),
    ({"foo": 1}, "<keys>", "unknown format"),
    ("{not json", "<json>", "bad JSON"),
    ("[1, 2]", "<line>", "object"),
]


@pytest.mark.parametrize(("record", "field", "snippet"), BAD_CASES)
def test_bad_input_names_file_line_field_value(
    tmp_path: Path, record: object, field: str, snippet: str
) -> None:
    good = {"prompt": "q", "response_a": "x", "response_b": "y", "p_a": 1}
    path = write(tmp_path / "bad.jsonl", [good, good, record])
    with pytest.raises(PairFormatError) as info:
        read_pairs(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.line == 3 and err.field == field
    msg = str(err)
    assert f"{path}:3:" in msg and repr(field) in msg and snippet in msg


def test_skipped_lines_are_reported_not_silent(tmp_path: Path) -> None:
    good = {"prompt": "q", "response_a": "x", "response_b": "y", "p_a": 1}
    path = write(tmp_path / "mixed.jsonl", [good, {"prompt": "q"}, good])
    skipped: list[PairFormatError] = []
    assert len(read_pairs(path, skipped=skipped)) == 2
    assert [e.line for e in skipped] == [2]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "nope.jsonl")


def conv(n_words: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(["cats"] * n_words)}]


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_truncation_keeps_conversation_end_and_whole_response(kind: str) -> None:
    tok = make_tokenizer(kind)
    fmt = Formatter(tok, max_length=40, is_encoder=kind == "encoder")
    c = [
        {"role": "user", "content": "dogs " + "cats " * 60 + "music"},
    ]
    pair = Pair(c, "good answer here", "bad", 1.0)
    prefix, a, b = fmt.encode_pair(pair)
    assert len(prefix) + len(a) <= 40 and len(prefix) + len(b) <= 40
    text_a = tok.decode(prefix + a)
    assert "music" in text_a and "dogs" not in text_a  # end kept, start cut
    assert "good answer here" in tok.decode(a)
    assert fmt.stats.prompt_truncated == 2 and fmt.stats.response_truncated == 0
    # A response longer than the budget keeps its start and a slice of the prompt.
    long = Pair(conv(5), "help " + "food " * 80, "bad", 1.0)
    prefix, a, _ = fmt.encode_pair(long)
    assert len(prefix) + len(a) <= 40
    assert fmt.stats.response_truncated == 1
    assert tok.decode(a).startswith("help")


def test_chat_template_prefix_is_shared_and_identical() -> None:
    tok = make_tokenizer("decoder", chat_template=True)
    fmt = Formatter(tok, max_length=128, is_encoder=False)
    assert fmt.use_template
    prefix, a, _ = fmt.encode_pair(Pair(conv(3), "good", "bad", 1.0))
    assert tok.convert_ids_to_tokens(prefix)[-3:] == ["assistant", "|", ">"]
    assert fmt.encode_item(conv(3), "good") == prefix + a


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_long_inputs_do_not_trigger_the_tokenizer_length_warning(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    tok = make_tokenizer(kind)
    tok.model_max_length = 32  # as a real model's tokenizer declares (512, ...)
    fmt = Formatter(tok, max_length=32, is_encoder=kind == "encoder")
    pair = Pair(conv(200), "help " * 100, "bad " * 100, 1.0)
    warning = "longer than the specified maximum sequence length"
    with caplog.at_level("WARNING"):
        prefix, a, b = fmt.encode_pair(pair)
        assert not [r for r in caplog.records if warning in r.getMessage()]
        # The warning this test guards against is what a plain call logs.
        tok("cats " * 200, add_special_tokens=False)
        assert [r for r in caplog.records if warning in r.getMessage()]
    assert len(prefix) + max(len(a), len(b)) <= 32
    assert fmt.stats.prompt_truncated == 2 and fmt.stats.response_truncated == 2

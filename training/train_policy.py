"""Fine-tune the policy on a round's data: ``python -m training train-policy``.

Modes (``PolicyConfig.mode``):

- ``sft`` — supervised fine-tuning on best-of-N examples with TRL's
  ``SFTTrainer``. Every example becomes prompt (the conversation, chat template
  applied with the generation prompt) + completion (the final assistant reply),
  and the loss is on the completion tokens only: earlier turns are context,
  not the sample the reward model picked.
- ``dpo`` — TRL's ``DPOTrainer`` on chosen/rejected pairs, the reference being
  the model the step starts from (frozen).
- ``sft+dpo`` — SFT, then DPO from its result (Llama 3's per-round recipe).

Input files (``.jsonl`` or ``.jsonl.gz``, one JSON object per line):

- SFT: ``{"messages": [..., {"role": "assistant", ...}]}`` (TRL conversational;
  what ``best-of-n`` and the data guard write, and Pairloop's SFT export),
  ``{"prompt", "completion"}`` with message lists or strings (TRL
  prompt-completion; Pairloop's SFT export without messages);
- DPO: ``{"prompt", "chosen", "rejected"}`` (TRL standard or conversational,
  Pairloop's preference export), ``{"chosen", "rejected"}`` with implicit
  prompt, or Pairloop pairs ``{"prompt"|"messages", "response_a", "response_b",
  "p_a"}`` (A is chosen when p_a > ½; ties are left out and counted).

Everything that can be wrong with the input is checked before training: an
empty file, bad JSON, a role other than user/assistant/system, an example
longer than ``max_length`` (capped by the model's context). The error names
file, line and field; the CLI exits 2 and writes nothing.

The output directory is a standard Hugging Face model directory (LoRA adapters
merged into the weights) with the tokenizer and its chat template, plus
``policy_config.json`` (the config), ``data_fingerprint.json`` (the files'
hashes, example counts and a hash of the parsed examples) and ``metrics.json``
(loss and learning rate per logged step, tokens/s). It is written into a hidden
temporary directory beside the target and renamed into place, so a reader sees
no directory or a complete one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import (
    LORA_MIN_PARAMS,
    PolicyConfig,
)
from training.policy_data import (
    Example,
    PolicyDataError,
    Progress,
    check_lengths,
    fingerprint,
    read_dpo,
    read_sft,
)


@dataclass
class TrainResult:
    model: Any
    tokenizer: Any
    metrics: dict[str, Any]
    out_dir: Path | None
    config: PolicyConfig
    fingerprint: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------- training


def _param_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def use_lora(config: PolicyConfig, model: Any) -> bool:
    if config.lora is not None:
        return config.lora
    return _param_count(model) >= LORA_MIN_PARAMS


def _lora_config(config: PolicyConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def _warmup_steps(config: PolicyConfig, examples: int, epochs: float) -> int:
    """Warm-up steps, rounded down: transformers rounds a ratio up, which on the
    few steps of a small round spends a whole step (of two) at learning rate 0."""
    per_epoch = math.ceil(
        math.ceil(examples / config.batch_size) / config.gradient_accumulation_steps
    )
    return int(config.warmup_ratio * math.ceil(per_epoch * epochs))


def per_rank_batch(config: PolicyConfig, world_size: int) -> int:
    """``batch_size`` is the global batch (per optimizer micro-step, over every
    rank), so K ranks of batch_size/K see the same examples per step as one."""
    if config.batch_size % world_size:
        raise ValueError(
            f"batch_size {config.batch_size} does not split over {world_size} "
            "processes; use a multiple of --nproc_per_node"
        )
    return config.batch_size // world_size


def _common_args(
    config: PolicyConfig, work: Path, device: str, warmup: int, world_size: int = 1
) -> dict[str, Any]:
    bf16 = config.bf16 if config.bf16 is not None else device.startswith("cuda")
    return {
        "output_dir": str(work),
        "per_device_train_batch_size": per_rank_batch(config, world_size),
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": warmup,
        "lr_scheduler_type": config.lr_scheduler,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "no",
        "report_to": [],
        "bf16": bf16,
        "use_cpu": not device.startswith("cuda"),
        "dataloader_num_workers": 0,
        "max_length": config.max_length,
        "disable_tqdm": False,
        "gradient_checkpointing": config.gradient_checkpointing,
    }


def _callback(phase: str, log: list[dict[str, Any]], progress: Progress | None):
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                log.append({"phase": phase, "step": state.global_step, **logs})

        def on_step_end(self, args, state, control, **kw):
            if progress is not None and state.max_steps:
                progress(state.global_step / state.max_steps, f"{phase} step")

    return Recorder()


def _phase_metrics(
    phase: str, log: list[dict[str, Any]], seconds: float, tokens: float
) -> dict[str, Any]:
    losses = [r["loss"] for r in log if r["phase"] == phase and "loss" in r]
    return {
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "steps": max((r["step"] for r in log if r["phase"] == phase), default=0),
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
    }


def _run_sft(
    model, tokenizer, examples, config, work, device, log, tokens, progress, world=1
):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **_common_args(
            config,
            work / "sft",
            device,
            _warmup_steps(config, len(examples), config.sft_epochs),
            world,
        ),
        learning_rate=config.sft_learning_rate,
        num_train_epochs=config.sft_epochs,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([e.record() for e in examples]),
        processing_class=tokenizer,
        peft_config=_lora_config(config) if use_lora(config, model) else None,
        callbacks=[_callback("sft", log, progress)],
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return trainer.model, _phase_metrics(
        "sft", log, seconds, tokens * args.num_train_epochs
    )


def _run_dpo(
    model, tokenizer, examples, config, work, device, log, tokens, progress, world=1
):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    lora = use_lora(config, model)
    ref = None
    if not lora:
        # The model DPO starts from, frozen (TRL would reload the base from disk,
        # which after SFT is the wrong model).
        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    args = DPOConfig(
        **_common_args(
            config,
            work / "dpo",
            device,
            _warmup_steps(config, len(examples), config.dpo_epochs),
            world,
        ),
        learning_rate=config.dpo_learning_rate,
        num_train_epochs=config.dpo_epochs,
        beta=config.beta,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=Dataset.from_list([e.record() for e in examples]),
        processing_class=tokenizer,
        peft_config=_lora_config(config) if lora else None,
        callbacks=[_callback("dpo", log, progress)],
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return trainer.model, _phase_metrics(
        "dpo", log, seconds, tokens * args.num_train_epochs
    )


def _merged(model: Any) -> Any:
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    if out.exists():
        raise FileExistsError(
            f"--out {out} already exists; versions are never overwritten"
        )
    return out


@dataclass
class Prepared:
    config: PolicyConfig
    start: Path
    tokenizer: Any
    sft: list[Example]
    dpo: list[Example]
    sft_tokens: int
    dpo_tokens: int
    max_length: int
    counts: dict[str, int]
    files: dict[str, list[str]]


def prepare(
    config: PolicyConfig,
    sft_files: Sequence[str] = (),
    dpo_files: Sequence[str] = (),
    artifacts_dir: str | None = None,
) -> Prepared:
    """Resolve the start model, read and check every input (no training, no
    writes). Raises ValueError subclasses with a readable message."""
    from training.models import load_config, load_tokenizer, resolve_model_ref

    needs_sft = config.mode in ("sft", "sft+dpo")
    needs_dpo = config.mode in ("dpo", "sft+dpo")
    if needs_sft and not sft_files:
        raise ValueError(f"mode {config.mode} needs SFT data (--data / --sft-data)")
    if needs_dpo and not dpo_files:
        raise ValueError(f"mode {config.mode} needs DPO pairs (--data / --dpo-data)")
    start_ref = config.latest if config.restart_from == "latest" else config.base
    start = resolve_model_ref(str(start_ref), artifacts_dir)
    tokenizer = load_tokenizer(str(start))
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{start_ref}: the tokenizer has no chat template")
    model_config = load_config(str(start))
    context = int(getattr(model_config, "max_position_embeddings", 0) or 0)
    max_length = min(config.max_length, context) if context else config.max_length
    counts: dict[str, int] = {}
    sft = [e for f in sft_files for e in read_sft(f)] if needs_sft else []
    dpo = [e for f in dpo_files for e in read_dpo(f, counts)] if needs_dpo else []
    if needs_dpo and not dpo:
        raise PolicyDataError(dpo_files[0], None, None, "no usable pairs (all ties)")
    sft_tokens = check_lengths(sft, tokenizer, max_length)
    dpo_tokens = check_lengths(dpo, tokenizer, max_length)
    counts |= {"sft_examples": len(sft), "dpo_pairs": len(dpo)}
    return Prepared(
        config=config,
        start=start,
        tokenizer=tokenizer,
        sft=sft,
        dpo=dpo,
        sft_tokens=sft_tokens,
        dpo_tokens=dpo_tokens,
        max_length=max_length,
        counts=counts,
        files={
            "sft": list(sft_files) if needs_sft else [],
            "dpo": list(dpo_files) if needs_dpo else [],
        },
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def train_policy(
    prepared: Prepared,
    out_dir: str | os.PathLike[str] | None,
    *,
    progress: Progress | None = None,
    extra_metrics: dict[str, Any] | None = None,
) -> TrainResult:
    """Train per ``prepared.config.mode`` and save atomically into ``out_dir``
    (None: keep in memory only)."""
    import torch
    from transformers import AutoModelForCausalLM, set_seed

    from training import distributed
    from training.models import default_device

    config = prepared.config
    out = check_out_dir(out_dir) if out_dir is not None else None
    # Under torchrun: join the process group (gloo on CPU, NCCL on GPU); the
    # trainers then run data-parallel on it. Only rank 0 writes and reports.
    world = distributed.init(config.device)
    per_rank_batch(config, world.size)
    if world.size > 1:
        device = str(distributed.device_for(world, config.device))
    else:
        device = config.device or default_device()
    if not world.is_main:
        progress = None
    set_seed(config.seed)
    parent = out.parent if out is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    name = out.name if out is not None else "policy"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    try:
        dtype = torch.float32  # trainers keep fp32 master weights; bf16 is autocast
        model = AutoModelForCausalLM.from_pretrained(str(prepared.start), dtype=dtype)
        model.to(device)
        tokenizer = prepared.tokenizer
        lora = use_lora(config, model)
        log: list[dict[str, Any]] = []
        phases: dict[str, Any] = {}
        work = tmp / "_trainer"
        modes = ["sft", "dpo"] if config.mode == "sft+dpo" else [config.mode]
        for i, phase in enumerate(modes):

            def sub(fraction: float, message: str, i: int = i) -> None:
                if progress is not None:
                    progress((i + fraction) / len(modes), message)

            if phase == "sft":
                model, phases["sft"] = _run_sft(
                    model, tokenizer, prepared.sft, config, work, device, log,
                    prepared.sft_tokens, sub, world.size,
                )  # fmt: skip
            else:
                model, phases["dpo"] = _run_dpo(
                    model, tokenizer, prepared.dpo, config, work, device, log,
                    prepared.dpo_tokens, sub, world.size,
                )  # fmt: skip
            model = _merged(model)
        model.eval()
        shutil.rmtree(work, ignore_errors=True)
        metrics = {
            "mode": config.mode,
            "lora": lora,
            "parameters": _param_count(model),
            "device": device,
            "max_length": prepared.max_length,
            "counts": prepared.counts,
            "distributed": world.as_dict(config.batch_size),
            **phases,
            "log": log,
            **(extra_metrics or {}),
        }
        fp = fingerprint(prepared.files, {"sft": prepared.sft, "dpo": prepared.dpo})
        if out is not None and world.is_main:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            saved = {
                **config.to_dict(),
                "start": str(prepared.start),
                "kind": "policy",
            }
            _write_json(tmp / "policy_config.json", saved)
            _write_json(tmp / "data_fingerprint.json", fp)
            _write_json(tmp / "metrics.json", metrics)
            tmp.chmod(0o755)
            os.replace(tmp, out)
        # The others wait for rank 0's checkpoint, so that every rank returns
        # with the version on disk.
        distributed.barrier(world)
        return TrainResult(model, tokenizer, metrics, out, config, fp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

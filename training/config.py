"""Training configuration: one dataclass, every field documented, saved per version."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

# Llama 2 (Touvron et al. 2023, table 28, "margin small"), indexed by strength level
# 1..4 where 1 = negligibly better / unsure and 4 = significantly better.
LLAMA2_SMALL_MARGINS = (0.0, 1 / 3, 2 / 3, 1.0)


@dataclass
class RewardConfig:
    """Hyperparameters of one reward-model training run (TRL ``RewardConfig`` style)."""

    base: str = field(
        default="builtin:minilm-l6",
        metadata={
            "help": "Model reference of the base: builtin:minilm-l6, "
            "builtin:smollm2-135m-instruct, a Hugging Face id in the local cache or a "
            "local directory. Encoders get mean pooling + a scalar head; decoders are "
            "scored at the last non-pad token."
        },
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "Directory of an earlier reward-model version to warm-start from "
            "(its backbone, head and tokenizer; `base` is then taken from it)."
        },
    )
    learning_rate: float = field(
        default=3e-5, metadata={"help": "Peak AdamW learning rate."}
    )
    num_epochs: float = field(
        default=1.0,
        metadata={"help": "Passes over the training pairs (fractions allowed)."},
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "Pairs per micro-batch; each pair contributes two sequences "
            "(both responses go through one forward pass)."
        },
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={"help": "Micro-batches per optimizer step."},
    )
    max_length: int = field(
        default=512,
        metadata={
            "help": "Maximum tokens per (conversation + response) sequence. Longer "
            "inputs keep the end of the conversation and as much of the response as "
            "fits; truncations are counted and reported, never dropped."
        },
    )
    warmup_ratio: float = field(
        default=0.05,
        metadata={
            "help": "Fraction of optimizer steps of linear warm-up before linear decay."
        },
    )
    weight_decay: float = field(
        default=0.0,
        metadata={"help": "AdamW weight decay on matrices (not biases or norms)."},
    )
    max_grad_norm: float = field(
        default=1.0,
        metadata={"help": "Gradient clipping norm; 0 disables clipping."},
    )
    seed: int = field(
        default=0,
        metadata={"help": "Seed for the head initialisation and batch order."},
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of pairs held out for evaluation, chosen by hashing the "
            "pair id so a pair stays on the same side across versions. Not used "
            "when a separate validation set is given (train-rm --eval FILE): "
            "then every pair trains."
        },
    )
    validations: int = field(
        default=4,
        metadata={
            "help": "Validation passes over the held-out pairs during training, "
            "evenly spaced (the last at the end); 0 validates once at the end."
        },
    )
    select_best: bool = field(
        default=True,
        metadata={
            "help": "Keep the weights of the validation pass with the lowest "
            "held-out log loss (best-checkpoint selection) instead of the last."
        },
    )
    length_control: bool = field(
        default=False,
        metadata={
            "help": "Fit a length covariate with the Bradley-Terry loss, "
            "P(A>B) = sigmoid(r_a - r_b + beta*(len_a - len_b)/(len_a + len_b)) "
            "(reply lengths in characters, beta learned), and drop it at scoring "
            "time, as LMArena's style control does: the reward is then not paid "
            "for length the labels prefer."
        },
    )
    ensemble_heads: int = field(
        default=1,
        metadata={
            "help": "Reward heads on the one shared backbone, each trained on the "
            "loss from its own initialisation; the reward is their mean and their "
            "variance measures disagreement (pair selection, reward-hacking "
            "monitor). 1 = a single head."
        },
    )
    eval_batch_size: int = field(
        default=32, metadata={"help": "Pairs per batch during evaluation."}
    )
    use_margins: bool = field(
        default=False,
        metadata={
            "help": "Subtract a Llama 2 margin, chosen by the label's strength, from "
            "the reward difference in favour of the preferred response."
        },
    )
    margins: tuple[float, ...] = field(
        default=LLAMA2_SMALL_MARGINS,
        metadata={
            "help": "Margins for strength levels 1..4 (1 = negligibly better/unsure, "
            "4 = significantly better); pairs without strength get no margin."
        },
    )
    center_rewards_coefficient: float = field(
        default=0.0,
        metadata={
            "help": "Coefficient of the reward-centring term coef·(r_a + r_b)², which "
            "keeps rewards near zero mean (Eisenstein et al. 2023); 0 disables it."
        },
    )
    pooling: str = field(
        default="mean",
        metadata={
            "help": "Encoder pooling: 'mean' over non-pad tokens (how MiniLM was "
            "trained) or 'cls'. Ignored for decoders."
        },
    )
    prefix_reuse: bool = field(
        default=True,
        metadata={
            "help": "Decoder bases: run the shared conversation once per pair and "
            "reuse its KV cache for both responses."
        },
    )
    padding_free: bool = field(
        default=True,
        metadata={
            "help": "BERT-family encoders: run the token-wise layers on the real "
            "tokens only, packed, so padding costs nothing outside attention."
        },
    )
    group_by_length: bool = field(
        default=True,
        metadata={
            "help": "Batch pairs of similar length together (dynamic padding wastes "
            "less compute); batch order is still shuffled."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Set every dropout probability to 0 (as TRL's RewardConfig does): "
            "the pairwise loss is noisy enough, and scores then match at eval time."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Trade compute for memory on large bases."},
    )
    device: str | None = field(
        default=None,
        metadata={"help": "torch device; default cuda when available, else cpu."},
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 autocast; default on for CUDA, off (fp32) on CPU where bf16 "
            "is slow."
        },
    )
    progress_interval_s: float = field(
        default=2.0,
        metadata={"help": "Seconds between progress callbacks."},
    )

    def __post_init__(self) -> None:
        self.margins = tuple(float(m) for m in self.margins)
        problems = []
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0 (got {self.learning_rate})")
        if self.num_epochs <= 0:
            problems.append(f"num_epochs must be > 0 (got {self.num_epochs})")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            problems.append("batch_size and gradient_accumulation_steps must be >= 1")
        if self.max_length < 8:
            problems.append(f"max_length must be >= 8 (got {self.max_length})")
        if not 0.0 <= self.eval_fraction < 1.0:
            problems.append(
                f"eval_fraction must be in [0, 1) (got {self.eval_fraction})"
            )
        if self.validations < 0:
            problems.append(f"validations must be >= 0 (got {self.validations})")
        if self.ensemble_heads < 1:
            problems.append(f"ensemble_heads must be >= 1 (got {self.ensemble_heads})")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            problems.append(f"warmup_ratio must be in [0, 1] (got {self.warmup_ratio})")
        if len(self.margins) != 4:
            problems.append(f"margins needs 4 values (got {self.margins})")
        if self.pooling not in ("mean", "cls"):
            problems.append(f"pooling must be 'mean' or 'cls' (got {self.pooling!r})")
        if problems:
            raise ValueError("invalid RewardConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["margins"] = list(self.margins)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            # Checkpoints outlive code versions; old fields must not block loading.
            warnings.warn(
                f"ignoring unknown RewardConfig fields {unknown}", stacklevel=2
            )
        return cls(**{k: v for k, v in data.items() if k in known})


def config_help() -> dict[str, str]:
    """Field name → help text (used by the CLI and docs)."""
    return {
        f.name: f.metadata.get("help", "") for f in dataclasses.fields(RewardConfig)
    }


def config_field(name: str) -> tuple[Any, str]:
    """(default, help text) of one RewardConfig field: what the CLI shows."""
    for f in dataclasses.fields(RewardConfig):
        if f.name == name:
            return f.default, f.metadata.get("help", "")
    raise KeyError(f"RewardConfig has no field {name!r}")


def dataclass_help(cls: type) -> dict[str, str]:
    """Field name → help text of any config dataclass here (CLI help, docs)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


POLICY_MODES = ("sft", "dpo", "sft+dpo")
# Full fine-tuning of a model this size with AdamW in fp32 needs ~16 bytes per
# parameter (weights, gradients, two moments): 8 GB at 500 M, where LoRA takes over.
LORA_MIN_PARAMS = 500_000_000


@dataclass
class PolicyConfig:
    """Hyperparameters of one policy update (``python -m training train-policy``)."""

    mode: str = field(
        default="sft",
        metadata={
            "help": "'sft' (best-of-N examples), 'dpo' (chosen/rejected pairs) or "
            "'sft+dpo' (SFT, then DPO from its result; Llama 3's RS → SFT → DPO)."
        },
    )
    base: str = field(
        default="builtin:smollm2-135m-instruct",
        metadata={"help": "Model reference of the base policy (training.models)."},
    )
    restart_from: str = field(
        default="base",
        metadata={
            "help": "'base': fine-tune the base on all pooled data every iteration "
            "(ReST-EM, Singh et al. 2023: transfers better than continuing); "
            "'latest': continue from `latest` (OpenRLHF's last rejection-sampling "
            "recipe, Llama 2)."
        },
    )
    latest: str | None = field(
        default=None,
        metadata={"help": "Directory of the current policy, for restart_from=latest."},
    )
    sft_learning_rate: float = field(
        default=2e-6,
        metadata={
            "help": "SFT peak learning rate (OpenRLHF rejection sampling: 2e-6)."
        },
    )
    sft_epochs: float = field(
        default=1.0,
        metadata={"help": "SFT passes over the examples (OpenRLHF: 1 epoch)."},
    )
    dpo_learning_rate: float = field(
        default=5e-7,
        metadata={"help": "DPO peak learning rate (RLHFlow iterative DPO: 5e-7)."},
    )
    dpo_epochs: float = field(
        default=1.0,
        metadata={
            "help": "DPO passes over the pairs (each iteration brings new "
            "on-policy pairs, RLHFlow)."
        },
    )
    beta: float = field(
        default=0.1,
        metadata={
            "help": "DPO β, the strength of the pull towards the reference "
            "(RLHFlow iterative DPO and the DPO paper: 0.1). The reference is the "
            "model the DPO step starts from."
        },
    )
    batch_size: int = field(
        default=8, metadata={"help": "Sequences (SFT) or pairs (DPO) per micro-batch."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    max_length: int = field(
        default=1024,
        metadata={
            "help": "Longest example in tokens (TRL's default 1024), capped by the "
            "model's context; longer examples are an input error, never truncated."
        },
    )
    warmup_ratio: float = field(
        default=0.03,
        metadata={"help": "Linear warm-up share of the steps (OpenRLHF: 0.03)."},
    )
    lr_scheduler: str = field(
        default="cosine",
        metadata={"help": "transformers scheduler name after warm-up (OpenRLHF)."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Gradient clipping norm."}
    )
    seed: int = field(
        default=0,
        metadata={"help": "Seeds data order, LoRA init and dropout (reproducible)."},
    )
    lora: bool | None = field(
        default=None,
        metadata={
            "help": "LoRA adapters merged into the weights on save; None: LoRA for "
            f"models of at least {LORA_MIN_PARAMS:,} parameters, full fine-tuning "
            "below (tiny and small models train fully on one device)."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (2·r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={"help": "peft target modules ('all-linear': QLoRA's choice)."},
    )
    device: str | None = field(
        default=None, metadata={"help": "cuda when available, else cpu."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; default on CUDA only."}
    )
    logging_steps: int = field(
        default=1, metadata={"help": "Optimizer steps between metric records."}
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute activations in the backward pass (TRL turns it on by "
            "default; off here: small models on CPU pay for it in time, not memory)."
        },
    )

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in POLICY_MODES:
            problems.append(f"mode must be one of {', '.join(POLICY_MODES)}")
        if self.restart_from not in ("base", "latest"):
            problems.append("restart_from must be 'base' or 'latest'")
        if self.restart_from == "latest" and not self.latest:
            problems.append("restart_from='latest' needs latest (a policy directory)")
        for name in ("sft_learning_rate", "dpo_learning_rate", "beta"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0")
        if not (self.sft_epochs > 0 and self.dpo_epochs > 0):
            problems.append("epochs must be > 0")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            problems.append("batch_size and gradient_accumulation_steps must be >= 1")
        if self.max_length < 8:
            problems.append("max_length must be >= 8")
        if problems:
            raise ValueError("invalid PolicyConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvalConfig:
    """Settings of one policy evaluation (``python -m training eval-policy``)."""

    n_samples: int = field(
        default=2,
        metadata={
            "help": "Samples per prompt and model; sample j of both models uses the "
            "same seed, so the pairs differ by the model only."
        },
    )
    max_new_tokens: int = field(
        default=256, metadata={"help": "Token limit per sample (the round's)."}
    )
    temperature: float = field(
        default=0.7,
        metadata={
            "help": "Sampling temperature; use the round's settings to compare like "
            "with like. The KL estimate is of the tempered distributions."
        },
    )
    top_p: float = field(default=0.9, metadata={"help": "Nucleus mass."})
    seed: int = field(default=0, metadata={"help": "Sampling seed shared by both."})
    tie_epsilon: float = field(
        default=0.0,
        metadata={"help": "Reward differences at most this count as ties (½ a win)."},
    )
    confidence: float = field(
        default=0.95, metadata={"help": "Level of the win rate's Wilson interval."}
    )
    device: str | None = field(default=None, metadata={"help": "torch device."})

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.max_new_tokens < 1:
            raise ValueError("invalid EvalConfig: n_samples, max_new_tokens >= 1")
        if not 0 < self.confidence < 1:
            raise ValueError("invalid EvalConfig: confidence must be in (0, 1)")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("invalid EvalConfig: temperature >= 0, 0 < top_p <= 1")

"""The reward model: a transformer backbone plus a scalar head.

- encoder backbones (BERT & co): mean (or CLS) pooling over non-pad tokens → head;
- decoder backbones (Llama & co): hidden state of the last non-pad token → head, as
  ``AutoModelForSequenceClassification`` does. Sequences are right-padded.

``forward_prefix_shared`` is the fast path for decoders: the conversation is run once
per pair and its KV cache is reused for both responses.

A checkpoint directory holds ``config.json`` (the backbone's config),
``model.safetensors`` (``backbone.*`` and ``head.*``), the tokenizer files and
``pairloop.json`` (``reward_model`` section = :class:`RewardModelSpec`, plus training
metadata written by ``train_rm``).

:func:`export_hf` (``python -m training export-hf``) writes a copy that
``AutoModelForSequenceClassification.from_pretrained`` loads with the same scores:
a decoder as its standard ``*ForSequenceClassification`` (last-token pooling, as
here); an encoder, whose mean pooling no standard head does, with a small modeling
file (``trust_remote_code=True``).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.packed import (
    packed_encoder_forward,
    packed_prefix_shared_forward,
    supports_packed,
    supports_packed_decoder,
)

ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "deberta",
    "deberta-v2",
    "electra",
    "albert",
    "mpnet",
    "modernbert",
}
META_FILE = "pairloop.json"
WEIGHTS_FILE = "model.safetensors"


def backbone_kind(hf_config: Any) -> str:
    archs = getattr(hf_config, "architectures", None) or []
    if any("CausalLM" in a for a in archs):
        return "decoder"
    return "encoder" if hf_config.model_type in ENCODER_TYPES else "decoder"


@dataclass
class RewardModelSpec:
    """What is needed, besides the backbone config, to rebuild the module."""

    kind: str  # "encoder" | "decoder"
    pooling: str = "mean"  # encoders only: "mean" | "cls"
    base: str = ""  # model reference the weights started from
    heads: int = 1  # ensemble reward heads on the shared backbone


class RewardModel(nn.Module):
    def __init__(self, backbone: nn.Module, spec: RewardModelSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        hidden = backbone.config.hidden_size
        # One output per ensemble head; each row has its own random init, which
        # is where the heads' disagreement comes from.
        self.head = nn.Linear(hidden, spec.heads)
        # Small init so the untrained model starts near r = 0 (loss ≈ log 2).
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        # False: forward returns the reward (the heads' mean) ``[batch]``; True:
        # every head's ``[batch, heads]`` (training, disagreement). One head is
        # always ``[batch]``.
        self.per_head = False
        params = inspect.signature(backbone.forward).parameters
        # transformers renamed past_key_values → cache; support both.
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        # BERT-family encoders skip padding outside attention (packed.py), and
        # Llama-family decoders do the same in the prefix-reuse forward.
        self.padding_free = (
            supports_packed(backbone)
            if self.is_encoder
            else supports_packed_decoder(backbone)
        )

    def _rewards(self, pooled: torch.Tensor) -> torch.Tensor:
        r = self.head(pooled.to(self.head.weight.dtype))  # [batch, heads]
        if self.per_head and self.spec.heads > 1:
            return r
        return r.mean(-1)

    @property
    def is_encoder(self) -> bool:
        return self.spec.kind == "encoder"

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.is_encoder:
            if self.spec.pooling == "cls":
                return hidden[:, 0]
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        last = mask.long().sum(1) - 1  # right padding: last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Rewards ``[batch]`` for right-padded sequences."""
        if self.padding_free and self.is_encoder:
            hidden, packing = packed_encoder_forward(
                self.backbone, input_ids, attention_mask
            )
            if self.spec.pooling == "cls":
                pooled = packing.first(hidden)
            else:
                pooled = packing.mean(hidden)
            return self._rewards(pooled)
        kwargs: dict[str, Any] = {}
        if not self.is_encoder:
            # Explicit positions keep rotary embeddings identical to the prefix path.
            kwargs["position_ids"] = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
            kwargs["use_cache"] = False
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, **kwargs
        )
        pooled = self._pool(out.last_hidden_state, attention_mask)
        return self._rewards(pooled)

    def forward_prefix_shared(
        self,
        prefix_ids: torch.Tensor,
        prefix_mask: torch.Tensor,
        suffix_ids: torch.Tensor,
        suffix_mask: torch.Tensor,
        repeats: int = 2,
    ) -> torch.Tensor:
        """Decoder rewards when each prefix row is shared by ``repeats`` suffixes.

        ``prefix_*``: ``[B, Lp]`` right-padded; ``suffix_*``: ``[B * repeats, Ls]``
        right-padded, ordered ``p0s0, p0s1, p1s0, ...``. Returns ``[B * repeats]``.
        The prefix runs once; its KV cache is repeated along the batch (a cheap
        copy) and gradients flow back through it from every suffix.
        """
        if self.is_encoder:
            raise ValueError("prefix reuse needs a decoder backbone")
        if self.padding_free:
            pooled = packed_prefix_shared_forward(
                self.backbone, prefix_ids, prefix_mask, suffix_ids, suffix_mask, repeats
            )
            return self._rewards(pooled)
        prefix_pos = (prefix_mask.long().cumsum(1) - 1).clamp(min=0)
        out = self.backbone(
            input_ids=prefix_ids,
            attention_mask=prefix_mask,
            position_ids=prefix_pos,
            use_cache=True,
        )
        cache = getattr(out, self._cache_kw, None)
        if cache is None:
            cache = out.past_key_values
        cache.batch_repeat_interleave(repeats)
        prefix_len = prefix_mask.long().sum(1).repeat_interleave(repeats)
        suffix_pos = prefix_len.unsqueeze(1) + torch.arange(
            suffix_ids.shape[1], device=suffix_ids.device
        )
        # Pad holes between a short prefix and its suffix are masked out, and the
        # suffix positions continue from each row's real prefix length, so this
        # equals running prefix + suffix unpadded.
        mask = torch.cat([prefix_mask.repeat_interleave(repeats, 0), suffix_mask], 1)
        out = self.backbone(
            input_ids=suffix_ids,
            attention_mask=mask,
            position_ids=suffix_pos,
            use_cache=True,
            **{self._cache_kw: cache},
        )
        hidden = out.last_hidden_state
        last = suffix_mask.long().sum(1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self._rewards(pooled)


def build_reward_model(
    base_dir: str | os.PathLike[str],
    *,
    pooling: str = "mean",
    base_ref: str = "",
    heads: int = 1,
) -> RewardModel:
    """A reward model from a pretrained backbone dir (head freshly initialised)."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_config = AutoConfig.from_pretrained(str(base_dir))
    # Loading a backbone out of a *ForCausalLM checkpoint reports the unused LM head
    # as "UNEXPECTED"; that is the intended behaviour here, so keep the log quiet.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        backbone = AutoModel.from_pretrained(str(base_dir), dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    spec = RewardModelSpec(
        kind=backbone_kind(hf_config), pooling=pooling, base=base_ref, heads=heads
    )
    return RewardModel(backbone, spec)


def reward_model_from_config(hf_config: Any, spec: RewardModelSpec) -> RewardModel:
    """A randomly initialised reward model (tests build tiny ones this way)."""
    from transformers import AutoModel

    return RewardModel(AutoModel.from_config(hf_config), spec)


def save_weights(model: RewardModel, directory: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Tied weights share storage; safetensors refuses aliases, so clone them apart.
    seen: dict[int, str] = {}
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            state[key] = tensor.clone()
        seen[ptr] = key
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    model.backbone.config.save_pretrained(str(directory))


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a reward model ({META_FILE} missing)"
        )
    return json.loads(path.read_text())


def load_reward_model(
    directory: str | os.PathLike[str], *, device: str | torch.device | None = None
) -> tuple[RewardModel, Any]:
    """Load ``(model, tokenizer)`` saved by ``train_rm`` (eval mode, fp32)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    directory = Path(directory)
    meta = read_meta(directory)
    spec = RewardModelSpec(**meta["reward_model"])
    hf_config = AutoConfig.from_pretrained(str(directory))
    model = reward_model_from_config(hf_config, spec)
    state = load_file(str(directory / WEIGHTS_FILE))
    model.load_state_dict(state, strict=True)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device or "cpu")
    model.eval()
    return model, tokenizer


def spec_dict(spec: RewardModelSpec) -> dict[str, Any]:
    return asdict(spec)


# --- Hugging Face export ------------------------------------------------------------

HF_EXPORT_META = "pairloop_export.json"
HF_REMOTE_MODULE = "modeling_pairloop_rm"
HF_PAD_TOKEN = "<|pairloop_pad|>"

_REMOTE_CODE = '''"""A Pairloop reward model for ``AutoModelForSequenceClassification``
(``trust_remote_code=True``), written by ``python -m training export-hf``.

Backbone + scalar head, pooled as Pairloop pools (``config.pairloop_pooling``: the
mean of the non-pad tokens, the first token, or the last non-pad token of a
right-padded batch). ``logits[:, 0]`` is the reward; ``token_type_ids`` are ignored,
as Pairloop feeds none.
"""

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel, {config_class}
from transformers.modeling_outputs import SequenceClassifierOutput


class PairloopRewardModel(PreTrainedModel):
    config_class = {config_class}
    base_model_prefix = "backbone"

    def __init__(self, config):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config)
        self.head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pooling = self.config.pairloop_pooling
        extra = {{}}
        if pooling == "last":
            positions = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
            extra = {{"position_ids": positions, "use_cache": False}}
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, **extra
        ).last_hidden_state
        if pooling == "cls":
            pooled = hidden[:, 0]
        elif pooling == "mean":
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        else:
            last = attention_mask.long().sum(1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        logits = self.head(pooled.to(self.head.weight.dtype))
        return SequenceClassifierOutput(logits=logits)
'''


def export_hf(
    model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write ``out_dir`` so that ``AutoModelForSequenceClassification`` loads the
    reward model of ``model_dir`` and ``logits[:, 0]`` equals Pairloop's score of
    the same input ids (as :class:`training.data.Formatter` builds them,
    right-padded with ``config.pad_token_id``).

    Decoders become their architecture's standard ``*ForSequenceClassification``
    (no remote code): it scores the rightmost token that is not the pad token, so
    when the pad token is also the end-of-sequence (or another special) token
    Pairloop's sequences end with, a dedicated pad token is added. Its head has no
    bias; pairwise losses never move Pairloop's (it starts at 0), and a model
    whose bias did move (``--center-coef``) is exported like an encoder. Encoders
    pool as no standard head does (the mean of the tokens, or the bare first
    token), so they get a modeling file and load with ``trust_remote_code=True``.
    Returns what was written (``loader``: ``native`` or ``remote_code``)."""
    model, tokenizer = load_reward_model(model_dir)
    if model.spec.heads > 1:
        # The reward is the heads' mean, which is one linear head with the mean
        # weights and bias: export that (the standard heads have one output).
        mean_head = nn.Linear(model.head.in_features, 1)
        with torch.no_grad():
            mean_head.weight.copy_(model.head.weight.mean(0, keepdim=True))
            mean_head.bias.copy_(model.head.bias.mean(0, keepdim=True))
        model.head = mean_head
        model.spec = RewardModelSpec(**{**asdict(model.spec), "heads": 1})
    meta = read_meta(model_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    bias = float(model.head.bias.detach().abs().max())
    if not model.is_encoder and bias == 0.0:
        info = _export_decoder_native(model, tokenizer, out)
    else:
        info = _export_remote_code(model, tokenizer, out, Path(model_dir))
    info["source"] = str(model_dir)
    info["reward_model"] = meta.get("reward_model")
    (out / HF_EXPORT_META).write_text(json.dumps(info, indent=2, sort_keys=True))
    return info


def _export_decoder_native(model: RewardModel, tokenizer: Any, out: Path) -> dict:
    from transformers import AutoModelForSequenceClassification

    tokenizer = copy.deepcopy(tokenizer)
    ends = {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id}
    ends.discard(None)
    added_pad = tokenizer.pad_token_id is None or tokenizer.pad_token_id in ends
    if added_pad:
        tokenizer.add_special_tokens({"pad_token": HF_PAD_TOKEN})
    cfg = copy.deepcopy(model.backbone.config)
    cfg.num_labels = 1
    cfg.architectures = None
    if not added_pad:
        cfg.pad_token_id = tokenizer.pad_token_id
    hf = AutoModelForSequenceClassification.from_config(cfg)
    backbone = getattr(hf, hf.base_model_prefix)
    backbone.load_state_dict(model.backbone.state_dict(), strict=True)
    with torch.no_grad():
        hf.score.weight.copy_(model.head.weight)
    if added_pad and len(tokenizer) > cfg.vocab_size:
        # The pad row is never attended to (right padding, causal attention).
        hf.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            hf.get_input_embeddings().weight[cfg.vocab_size :].zero_()
    hf.config.pad_token_id = tokenizer.pad_token_id
    hf.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {
        "loader": "native",
        "architecture": type(hf).__name__,
        "pad_token_id": tokenizer.pad_token_id,
        "added_pad_token": HF_PAD_TOKEN if added_pad else None,
    }


def _export_remote_code(
    model: RewardModel, tokenizer: Any, out: Path, source: Path
) -> dict:
    cfg = copy.deepcopy(model.backbone.config)
    pooling = model.spec.pooling if model.is_encoder else "last"
    save_weights(model, out)  # keys backbone.* and head.*, as the module expects
    cfg.num_labels = 1
    cfg.pairloop_pooling = pooling
    cfg.architectures = ["PairloopRewardModel"]
    cfg.auto_map = {
        "AutoModelForSequenceClassification": f"{HF_REMOTE_MODULE}.PairloopRewardModel"
    }
    cfg.save_pretrained(str(out))
    code = _REMOTE_CODE.format(config_class=type(cfg).__name__)
    (out / f"{HF_REMOTE_MODULE}.py").write_text(code)
    tokenizer.save_pretrained(str(out))
    if (source / "README.md").is_file():  # the model card, where train_rm wrote one
        shutil.copy2(source / "README.md", out / "README.md")
    return {
        "loader": "remote_code",
        "architecture": "PairloopRewardModel",
        "pooling": pooling,
        "pad_token_id": tokenizer.pad_token_id,
    }


@torch.no_grad()
def head_rewards(
    model: RewardModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance) across the ensemble heads of each sequence's reward,
    ``[batch]`` each; the variance is 0 with one head (or identical heads)."""
    was = model.per_head
    model.per_head = True
    try:
        r = model(input_ids, attention_mask)
    finally:
        model.per_head = was
    if r.ndim == 1:
        return r, torch.zeros_like(r)
    return r.mean(-1), r.var(-1, unbiased=False)

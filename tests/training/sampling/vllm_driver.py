"""Run by tests/training/sampling/test_vllm_inprocess.py under .venv-vllm's Python
(vLLM's CPU build and its transformers; this checkout on PYTHONPATH): Pairloop's
in-process ``vllm`` backend samples, and the JSON on stdout says what it drew."""

import json
import sys

from training.sampling import make_sampler


def main() -> None:
    model_dir, max_new = sys.argv[1], int(sys.argv[2])
    sampler = make_sampler(
        "vllm", model_dir, dtype="float32", enforce_eager=True, max_model_len=2048
    )
    convs = [
        [{"role": "user", "content": "Write one sentence about rivers."}],
        [{"role": "user", "content": "Say hello."}],
    ]

    def draw(seed: int, first_index: int = 0) -> list[list[list]]:
        out = sampler.sample(
            convs, 3, max_new_tokens=max_new, seed=seed, first_index=first_index
        )
        return [[[c.text, c.token_count, c.finish_reason] for c in row] for row in out]

    print(
        "RESULT "
        + json.dumps(
            {
                "context_length": sampler.context_length,
                "a": draw(7),
                "again": draw(7),
                "other_seed": draw(8),
            }
        )
    )


if __name__ == "__main__":  # vLLM's engine starts its core in a spawned process
    main()

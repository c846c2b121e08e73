# t2mir inference server image (`t2mir serve`), with the shipped checkpoints.
#
#   GPU (default): docker build -t t2mir-server .
#   CPU:           docker build -t t2mir-server:cpu \
#                    --build-arg BASE=python:3.11-slim-bookworm \
#                    --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu \
#                    --build-arg DEVICE=cpu .
#
# BASE         runtime base image. The CUDA runtime image gets Python 3.11 from apt; an image that
#              already has python3.11 (python:3.11-slim) is used as is.
# TORCH_INDEX  pip index torch comes from. PyPI's Linux x86_64 torch wheels are CUDA builds (they
#              bring their own CUDA libraries, only the driver comes from the host); pick a CUDA
#              version with e.g. https://download.pytorch.org/whl/cu126, CPU-only wheels (much
#              smaller) with https://download.pytorch.org/whl/cpu.
# TORCH_VERSION torch version pin (empty: the newest the index has).
# DEVICE       default T2MIR_DEVICE of the image (cuda or cpu); the environment can override it.
# COMPILER     1: add g++ and the Python headers to the runtime image, which `t2mir serve` needs
#              to build its AOTInductor decode step at load (T2MIR_COMPILE_STEP=auto, the default,
#              serves eagerly without them).
#
# Only the `server` and `client` extras are installed, and the `training/` package is not copied:
# nothing on the serving path imports the training stack (gymnasium, MuJoCo, SB3); `t2mir train`
# in this image says so. tests/deploy/test_dockerfile.py checks the import claim.

ARG BASE=nvidia/cuda:12.6.3-runtime-ubuntu22.04

# ---------------------------------------------------------------- python on the chosen base
FROM ${BASE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN set -eux; \
    if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3.11 --version

# ---------------------------------------------------------------- build: venv with torch + t2mir
FROM base AS build
ARG TORCH_INDEX=https://pypi.org/simple
ARG TORCH_VERSION=
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel \
 && pip install --index-url "${TORCH_INDEX}" "torch${TORCH_VERSION:+==${TORCH_VERSION}}"
WORKDIR /src
# Metadata first, then the packages (the torch layer above is reused across code changes).
COPY pyproject.toml README.md ./
COPY t2mir_model ./t2mir_model
COPY server ./server
COPY clients ./clients
RUN pip install ".[server,client]" \
 && python -c "import server.app, clients, t2mir_model; print('t2mir import ok')"

# ---------------------------------------------------------------- runtime
FROM base AS runtime
ARG DEVICE=cuda
ARG COMPILER=0
RUN set -eux; \
    if [ "${COMPILER}" = "1" ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends g++ libc6-dev; \
        if ! python3.11 -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then \
            apt-get install -y --no-install-recommends python3.11-dev; \
        fi; \
        rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 t2mir \
 && useradd --system --uid 10001 --gid t2mir --home-dir /home/t2mir --create-home --shell /usr/sbin/nologin t2mir
# The shipped checkpoints (safetensors + config + card), read-only for the server user.
COPY checkpoints/ /opt/t2mir/checkpoints/
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/t2mir \
    T2MIR_HOST=0.0.0.0 \
    T2MIR_PORT=8000 \
    T2MIR_DEVICE=${DEVICE} \
    T2MIR_CHECKPOINTS=/opt/t2mir/checkpoints/darkroom-t2mir-ad,/opt/t2mir/checkpoints/darkroom-t2mir-dpt,/opt/t2mir/checkpoints/pointrobot-t2mir-ad
WORKDIR /home/t2mir
USER t2mir
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('T2MIR_PORT', '8000'), timeout=4)"]
# Settings come from T2MIR_* variables (T2MIR_CHECKPOINTS, T2MIR_REDIS_URL, T2MIR_API_KEYS, ...);
# flags appended to `docker run IMAGE ...` override them, e.g. `--checkpoint /models/x`.
ENTRYPOINT ["t2mir", "serve"]
CMD []

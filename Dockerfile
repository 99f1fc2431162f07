# GPU image of the behavior control server. Build and run (carrier and store mounted as volumes):
#   docker build -t sft-eraser .
#   docker run --gpus all -p 8000:8000 -v $PWD/runs/carrier2:/models/carrier:ro \
#       -v $PWD/runs/store:/store --user "$(id -u):$(id -g)" -e SFT_ERASER_ADMIN_TOKEN=... sft-eraser
# The store is written to (registrations): --user runs as the owner of the host's directory
# (without it the image's user, uid 10001, must be able to write there); add -e HOME=/tmp if
# that uid has no home in the image.
# Replicas sharing one registry: -e SFT_ERASER_STORE=postgresql://user@host/db -e PGPASSWORD=...
# instead of the /store volume (docs/deploy.md, deploy/compose.yaml).
# Any `serve` flag can be appended (docker run ... sft-eraser --max-batch-size 32) or set as an
# SFT_ERASER_<FLAG> environment variable; set the port with SFT_ERASER_PORT, which the health
# check reads (not with --port: the health check would keep asking port 8000). The health check
# fails once the model cannot load (GET /health answers 503).
# On SIGTERM the server lets requests in flight finish for --shutdown-timeout-s (60 s), answers
# the rest with a 503 and closes what is left 5 s later; docker stop kills after 10 s unless told
# otherwise: docker run --stop-timeout 70 ... (or docker stop -t 70; more with a longer
# SFT_ERASER_SHUTDOWN_TIMEOUT_S).
FROM python:3.11-slim

# PyPI's Linux torch wheels are CUDA builds and bring their own CUDA runtime; the host needs only
# the NVIDIA driver and container toolkit (--gpus all).
RUN pip install --no-cache-dir "torch>=2.4,<3"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY eraser_store ./eraser_store
COPY server ./server
COPY training ./training
COPY sft_eraser ./sft_eraser
RUN pip install --no-cache-dir ".[serve]" && useradd --create-home --uid 10001 serve \
    && mkdir -p /models /store && chown serve /store

USER serve
ENV SFT_ERASER_CARRIER=/models/carrier \
    SFT_ERASER_STORE=/store \
    SFT_ERASER_HOST=0.0.0.0 \
    SFT_ERASER_PORT=8000
VOLUME ["/store"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SFT_ERASER_PORT', '8000'), timeout=2)"
ENTRYPOINT ["sft-eraser", "serve"]

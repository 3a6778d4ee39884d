# One image for the worker and the scorer (docker-compose.yml and deploy/k8s pick the command).
FROM python:3.11-slim
# LightGBM's wheel links the OpenMP runtime (libgomp.so.1), which the slim image lacks
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY features ./features
COPY streams ./streams
COPY serving ./serving
COPY tessera ./tessera
COPY examples ./examples
RUN pip install --no-cache-dir .
# An unprivileged user owning the data folder (a new named volume copies this ownership)
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin tessera \
    && mkdir -p /data && chown tessera /data
USER 10001
ENV TESSERA_HOME=/data
ENTRYPOINT ["tessera"]

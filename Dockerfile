# One image for the worker and the scorer (docker-compose picks the command).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY features ./features
COPY streams ./streams
COPY serving ./serving
COPY tessera ./tessera
COPY examples ./examples
RUN pip install --no-cache-dir .
ENV TESSERA_HOME=/data
ENTRYPOINT ["tessera"]

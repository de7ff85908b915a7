# pneumoscreen worker image (CPU). For a GPU node build with --build-arg TF_EXTRA="[and-cuda]".
FROM python:3.11-slim

ARG TF_EXTRA=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 \
    SCREEN_DATA_DIR=/var/lib/pneumoscreen

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY model ./model
COPY db ./db
RUN pip install --no-cache-dir ".[flower]" \
    && if [ -n "$TF_EXTRA" ]; then pip install --no-cache-dir "tensorflow${TF_EXTRA}"; fi \
    && useradd --system --home /var/lib/pneumoscreen --create-home screen \
    && install -d -o screen -g screen /var/lib/pneumoscreen/spool

USER screen
ENTRYPOINT ["screen"]
CMD ["worker"]

# pneumoscreen worker image (CPU). For a GPU node build with --build-arg TF_EXTRA="[and-cuda]".
FROM python:3.11.11-slim-bookworm

ARG TF_EXTRA=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 \
    SCREEN_DATA_DIR=/var/lib/pneumoscreen

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY worker ./worker
COPY model ./model
COPY db ./db
# Exact versions from constraints.txt (the lock): the image is the one the tests ran against.
RUN pip install --no-cache-dir -c constraints.txt ".[flower]" \
    && if [ -n "$TF_EXTRA" ]; then \
        pip install --no-cache-dir -c constraints.txt "tensorflow${TF_EXTRA}"; fi \
    && useradd --system --home /var/lib/pneumoscreen --create-home screen \
    && chmod 0700 /var/lib/pneumoscreen \
    && install -d -m 0700 -o screen -g screen /var/lib/pneumoscreen/spool

USER screen
ENTRYPOINT ["screen"]
CMD ["worker"]

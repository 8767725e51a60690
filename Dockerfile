# The voicebot service with its Debian dependencies. Vosk models and call data
# are volumes (see docker-compose.yml) so images stay small and data survives.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      espeak-ng libespeak-ng1 sox libsox-fmt-base libportaudio2 libsndfile1 \
      sphinxtrain sphinxbase-utils pocketsphinx kamailio \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY voicebot ./voicebot
RUN pip install --no-cache-dir .
COPY grammars ./grammars
COPY scenarios ./scenarios
COPY examples ./examples
COPY models/README.md ./models/README.md

ENV VOICEBOT_HOME=/app \
    VOICEBOT_MODELS_DIR=/app/models \
    VOICEBOT_DATA_DIR=/data \
    VOICEBOT_POCKETSPHINX_MODEL=/app/pocketsphinx-en-us-adapted
# PocketSphinx adapted to synthetic test voices, outside the models volume
RUN voicebot models adapt --out /app/pocketsphinx-en-us-adapted
VOLUME ["/app/models", "/data"]
# SIP (UDP and TCP), RTP for the workers' calls, the HTTP API
EXPOSE 5060/udp 5060/tcp 4000-4999/udp 8080/tcp
ENTRYPOINT ["voicebot"]
# The API answers outside the container only when bound to every interface (no logins yet: keep
# the published port on the host's loopback, as docker-compose.yml does).
CMD ["serve", "--http-host", "0.0.0.0"]

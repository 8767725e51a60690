# The voicebot service with its Debian dependencies. Models and call data are
# volumes (see docker-compose.yml) so images stay small and data survives.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      espeak-ng libespeak-ng1 sox libsox-fmt-base libportaudio2 libsndfile1 make \
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
    VOICEBOT_DATA_DIR=/data
VOLUME ["/app/models", "/data"]
ENTRYPOINT ["voicebot"]
CMD ["replay", "examples/calls/s01_hours.wav", "examples/calls/s05_person.wav", "examples/calls/s09_intake.wav"]

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
ENTRYPOINT ["voicebot"]
CMD ["replay", "examples/calls/ex01_hours.wav", "examples/calls/ex02_person.wav", "examples/calls/ex03_intake.wav", "examples/calls/ex04_keypad_zero.wav"]

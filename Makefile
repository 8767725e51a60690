# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Both create .venv when missing and install the package with its dev extras;
# Debian packages are installed when running as root, otherwise the exact
# apt-get line is printed.

VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  ?= python3
STAMP   := $(VENV)/.installed
# espeak-ng: speech out (pyttsx3 drives libespeak-ng) and test calls; sox: test-call channels;
# libportaudio2: the sound-card softphone; libsndfile1: WAV codecs;
# baresip-core: the real SIP phone the SIP tests call the service with (baresip without its GUI front-ends);
# sphinxtrain, sphinxbase-utils, pocketsphinx: adapting PocketSphinx's model (voicebot models adapt);
# kamailio: the SIP front that spreads calls over the worker processes and keeps scanners out;
# postgresql: the server the store's tests start a throwaway cluster of (no system service is used);
# chromium: the real browser the dashboard's acceptance test drives through Playwright (no browser download)
DEBS    := espeak-ng libespeak-ng1 sox libsox-fmt-base libportaudio2 libsndfile1 baresip-core \
           sphinxtrain sphinxbase-utils pocketsphinx kamailio postgresql chromium
ADAPTED := models/pocketsphinx-en-us-adapted/means
EXAMPLES := $(wildcard examples/calls/*.wav)

.PHONY: run replay test setup debs bench corpus clean

# the phone service: SIP on 5060 (UDP and TCP), HTTP API on 127.0.0.1:8080; Ctrl-C drains it
run: setup
	$(BIN)/voicebot serve

# the bundled example calls through the bot, transcripts printed
replay: setup
	$(BIN)/voicebot replay $(EXAMPLES)

# Tests with PJSIP inside the test process run in a pytest of their own: PJSIP's media threads
# calling into Python have crashed that process (SIGSEGV) on a heavily loaded machine (one cause, media
# ports torn down by the garbage collector while still in the conference bridge, is fixed), and a crash
# must not take the rest of the suite's results with it. A run killed by a signal is run once more,
# loudly; a test that fails, fails. (The service itself runs PJSIP in restartable worker processes.)
test: setup
	$(BIN)/pytest -q -m "not pjsip"
	@$(BIN)/pytest -q -m pjsip; code=$$?; \
	if [ $$code -gt 128 ]; then \
	  echo "WARNING: the in-process PJSIP tests were killed by signal $$((code - 128)); running them once more"; \
	  $(BIN)/pytest -q -m pjsip; code=$$?; \
	fi; exit $$code

setup: debs $(STAMP) $(ADAPTED)

# PocketSphinx adapted to synthetic voices: built once from the scenario (espeak-ng now and then
# differs in the last bit or two of a sample, so two builds are close, not identical)
$(ADAPTED): $(STAMP) voicebot/asr/adapt.py scenarios/benefits.toml
	$(BIN)/voicebot models adapt

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

debs:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

bench: setup
	$(BIN)/python bench/replay_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# ST-RAN Scar: the two commands are `make demo` (main job) and `make test` (every test).
# `make setup` builds both virtual environments from the pinned lock files; it is
# idempotent (a second run only checks the stamps: 0.01 s).

PYTHON ?= python3.11
# The machine's cores are shared: OpenMP threads that spin-wait were measured up to 6x slower under load than
# passive ones (docs/models.md), so every target runs PyTorch with passive waiting.
export OMP_WAIT_POLICY ?= PASSIVE
VENV := .venv
SVENV := .venv-slicer
PVENV := .venv-peer
PY := $(VENV)/bin/python
SPY := $(SVENV)/bin/python
PPY := $(PVENV)/bin/python

.PHONY: setup setup-pacs demo serve test test-server test-slicer test-quick lint bench setup-peer bench-peer demo-model compare bound sample-data clean-venvs

setup: $(VENV)/.stamp $(SVENV)/.stamp

# Server / training stack. Installed with --no-deps from a full lock: monailabel 0.8.5
# declares sam2 (a CUDA-oriented sdist) and monai[torchvision], neither of which the app
# needs and both of which break a CPU-only torch 2.13.0 (see docs/installation.md).
# stran/setup_env.py (stdlib only) refuses a lock line that is not a registry pin and turns
# a pip failure into one line; pip's own output goes to <venv>/setup.log.
$(VENV)/.stamp: requirements/server.lock pyproject.toml stran/setup_env.py
	@$(PYTHON) stran/setup_env.py $(VENV) requirements/server.lock --editable .
	@touch $@

# Slicer test stack: slicer-core (Slicer's MRML classes) needs numpy 2.
$(SVENV)/.stamp: requirements/slicer.lock stran/setup_env.py
	@$(PYTHON) stran/setup_env.py $(SVENV) requirements/slicer.lock
	@touch $@

# Optional, not part of `setup`/`test`: the authors' TensorFlow ST-RAN (TensorFlow CPU 2.21 + legacy Keras 2) for
# `make bench-peer`. Only numpy and TensorFlow (training/peer_tf.py runs there); the project is not installed.
setup-peer: $(PVENV)/.stamp

$(PVENV)/.stamp: requirements/peer.lock stran/setup_env.py
	@$(PYTHON) stran/setup_env.py $(PVENV) requirements/peer.lock
	@touch $@

# Debian's Orthanc with its DICOMweb plugin, the PACS the tests start (stran/pacs/orthanc.py; they skip, saying what
# to run, without it). Only a check when installed; otherwise apt-get as root or with password-less sudo, else one line.
ORTHANC_BIN = $(or $(STRAN_ORTHANC),$(shell command -v Orthanc 2>/dev/null),/usr/sbin/Orthanc)
ORTHANC_PLUGIN = $(or $(STRAN_ORTHANC_PLUGIN),/usr/share/orthanc/plugins/libOrthancDicomWeb.so)
ORTHANC_PKGS := orthanc orthanc-dicomweb
setup-pacs:
	@if [ -f "$(ORTHANC_BIN)" ] && [ -f "$(ORTHANC_PLUGIN)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "Orthanc is not installed: run 'sudo apt-get install -y $(ORTHANC_PKGS)' (the PACS tests are skipped until then)"; exit 0; fi; \
	command -v apt-get >/dev/null || { echo "Orthanc is not installed and there is no apt-get: the PACS tests are skipped"; exit 0; }; \
	echo "installing $(ORTHANC_PKGS) (apt-get)"; \
	($$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(ORTHANC_PKGS) >/dev/null) \
	  || echo "warning: could not install $(ORTHANC_PKGS); the PACS tests will be skipped"

demo: $(VENV)/.stamp
	$(PY) -m stran.cli demo

serve: $(VENV)/.stamp
	$(PY) -m stran.cli serve

sample-data: $(VENV)/.stamp
	$(PY) -m sample_data

test: setup setup-pacs
	$(MAKE) --no-print-directory test-server test-slicer

test-server: $(VENV)/.stamp
	$(PY) -m pytest tests/unit tests/integration tests/security -q

test-slicer: $(SVENV)/.stamp $(VENV)/.stamp
	$(SPY) -m pytest tests/slicer -q

# Everything but the tests that start servers or train (about a minute or two).
test-quick: setup setup-pacs
	$(PY) -m pytest tests/unit -q -m "not slow"
	$(SPY) -m pytest tests/slicer -q -m "not slow"

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check stran apps training sample_data tests slicer_extension

bench: $(VENV)/.stamp setup-pacs
	$(PY) training/bench_io.py
	$(PY) training/bench_models.py
	$(PY) training/bench_server.py
	$(PY) training/bench_cli.py
	$(PY) training/bench_preprocess.py
	$(PY) training/bench_pacs.py
	$(PY) training/bench_training.py

# Ours against the authors' TensorFlow ST-RAN, same inputs and threads, alternating rounds (docs/models.md,
# "Against the authors' TensorFlow"): 1 thread, then 2.
bench-peer: setup-peer $(VENV)/.stamp
	$(PY) training/bench_peer.py --threads 1 --peer-python $(PPY) --profile
	$(PY) training/bench_peer.py --threads 2 --peer-python $(PPY)

# The shipped demo model (apps/stran/model/pretrained_scar.pt + MODEL_CARD.md) and the paper's comparison.
demo-model: $(VENV)/.stamp
	$(PY) training/train_demo_model.py

# The budget of training/results/comparison.md (1.7 h of training on 2 cores for the 13 runs, plus about half an hour
# to generate the cohorts and cache them the first time); drop the flags for the
# demo model's budget per run (about 9 h).
compare: $(VENV)/.stamp
	$(PY) training/compare.py --train-studies 256 --epochs 6

# The bound: a reader with perfect contours (training/results/bound.md; ~10 min the first time).
bound: $(VENV)/.stamp
	$(PY) training/bound.py

clean-venvs:
	rm -rf $(VENV) $(SVENV) $(PVENV)

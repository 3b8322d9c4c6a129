# Two commands do all setup on a fresh machine:
#   make demo   creates .venv, installs Assay with only the extras the demo needs (`demo`), runs the quickstart recipe
#               on the bundled sample and writes a report
#   make test   creates .venv, installs everything (and the peer tools the cross-checks compare against), runs pytest
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PEERS := .venv-peers
DEMO_OUT ?= out/quickstart
# pytest-xdist workers for `make test`; a test file runs whole on one worker (its module fixtures, such as a Ray
# cluster or a flywheel run, are built once); TEST_WORKERS=0 runs the suite in this one process
TEST_WORKERS ?= 2
# the lock: exact versions of everything below installs (pyproject.toml has the ranges; scripts/lock.py regenerates it)
LOCK := constraints.txt

.PHONY: install install-demo demo test peers system-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"

# llama-cpp-python ships as source and compiles at install time. Built for the machine's own CPU (GGML_NATIVE, its
# default), it turns on llama.cpp's AMX kernels on CPUs that have AMX, and those crash (SIGSEGV in
# ggml_backend_amx_mul_mat) on any prompt longer than one token on this kind of machine. So it is built once without
# GGML_NATIVE (AVX2 and the usual x86-64 features, no AMX) into a wheelhouse outside the clone that later installs
# reuse; pip's own wheel cache can't be used, as it does not key wheels by CMAKE_ARGS.
LLAMA_CPP := $(shell grep -o '^llama-cpp-python==[0-9.]*' $(LOCK))
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
WHEELHOUSE ?= $(HOME)/.cache/assay/wheels-portable

$(WHEELHOUSE)/.built-$(LLAMA_CPP): | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir \
	  --no-binary llama-cpp-python -w $(WHEELHOUSE) '$(LLAMA_CPP)'
	touch '$@'

# everything (the test suite uses every extra)
$(VENV)/.installed: pyproject.toml $(LOCK) $(WHEELHOUSE)/.built-$(LLAMA_CPP) | $(BIN)/python
	$(BIN)/python -m pip install -q -c $(LOCK) --find-links $(WHEELHOUSE) -e '.[all,dev]'
	touch $@

# only what the demo needs (the `demo` extra): a fraction of the download and of the install time
$(VENV)/.installed-demo: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[demo]'
	touch $@

install: $(VENV)/.installed
install-demo: $(VENV)/.installed-demo

# datatrove, the reference the filter cross-checks compare against, lives in its own venv (its pins differ from ours)
$(PEERS)/.installed:
	$(PY) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --upgrade "pip>=24"
	$(PEERS)/bin/python -m pip install -q 'datatrove[processing,io]==0.10.1' spacy==3.8.18 aiohttp==3.14.5 lxml_html_clean==0.4.6
	# the LeRobot dataset checkers the trajectory tests and benchmarks/trajectory_lint.py compare against; lerobot-lint
	# without its lerobot dependency (lerobot pins torch<2.12): the benchmark feeds its checks a pyarrow loader
	$(PEERS)/bin/python -m pip install -q lerobot-doctor==0.2.0 av==18.1.0
	$(PEERS)/bin/python -m pip install -q --no-deps lerobot-lint==0.1.1
	touch $@

# system packages some tests use, from Debian (needs root + apt; elsewhere those tests say what is missing):
# the Python and PostgreSQL manuals (real HTML, PSF and PostgreSQL licenses), Chromium for the browser test,
# bubblewrap for the code sandbox, real RGBA logos and photos for the image tests (adwaita-icon-theme: CC-BY-SA 3.0 /
# LGPL-3; mate-backgrounds: GPL-2+), libGL and glib for OpenCV (opencv-python, pulled by scenedetect and rapidocr),
# FFmpeg's libraries for torchcodec (LeRobot's video decoder, .venv-lerobot), Mesa's EGL for MuJoCo's offscreen
# rendering (the robot simulator)
system-deps:
	@missing=""; \
	[ -d /usr/share/doc/python3.11/html ] || missing="$$missing python3-doc"; \
	[ -d /usr/share/doc/postgresql-doc-15/html ] || missing="$$missing postgresql-doc-15"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	[ -d /usr/share/icons/Adwaita/512x512 ] || missing="$$missing adwaita-icon-theme"; \
	[ -d /usr/share/backgrounds/mate/nature ] || missing="$$missing mate-backgrounds"; \
	ldconfig -p | grep -q 'libGL\.so\.1 ' || missing="$$missing libgl1"; \
	ldconfig -p | grep -q 'libgthread-2\.0\.so\.0 ' || missing="$$missing libglib2.0-0"; \
	ldconfig -p | grep -q 'libavcodec\.so\.59 ' || missing="$$missing libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8"; \
	ldconfig -p | grep -q 'libEGL_mesa\.so\.0 ' || missing="$$missing libegl-mesa0 libgl1-mesa-dri"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null); \
	  else echo "note: tests that need$$missing will say so (install them with apt-get)"; fi; fi

# LeRobot's own dataset loader (lerobot-dataset: lerobot's datasets module packaged alone; lerobot itself pins
# torch<2.12) on this project's CPU torch, with torchcodec on Debian's FFmpeg libraries for the videos
LEROBOT := .venv-lerobot
$(LEROBOT)/.installed:
	$(PY) -m venv $(LEROBOT)
	$(LEROBOT)/bin/python -m pip install -q --upgrade "pip>=24"
	$(LEROBOT)/bin/python -m pip install -q torch==2.13.0 lerobot-dataset==0.4.4 torchcodec==0.13.0
	touch $@

peers: $(PEERS)/.installed $(LEROBOT)/.installed system-deps

demo: install-demo
	$(BIN)/assay run recipes/quickstart.yaml --input samples/python-docs --output $(DEMO_OUT) --overwrite --workers 2
	@echo "output shards, rejected/, stats.json and report.html are in $(DEMO_OUT)"

test: install peers
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(PEERS) out .pytest_cache

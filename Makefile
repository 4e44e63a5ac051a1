# Refund terminal firmware. `make demo` and `make test` are the two commands;
# both create .venv on demand from pyproject.toml (pinned versions).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BOARD ?= unix
PORT ?=

.PHONY: venv test demo bench soak mpy deploy clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m host_tools.demo

bench: $(STAMP)
	$(BIN)/python -m host_tools.benchmarks

# The long fuzz: >= 10,000 frames through the host-link decoder and the ECR parser
# (and through both service-link frame decoders, tests/test_svcframe.py).
soak: $(STAMP)
	REFUND_FUZZ_N=$${REFUND_FUZZ_N:-10000} $(BIN)/python -m pytest -q -s -k "fuzz or parser or never_raises" \
	    tests/test_iso8583.py tests/test_ecr.py
	REFUND_FUZZ_N=$${REFUND_FUZZ_N:-10000} $(BIN)/python -m pytest -q -s tests/test_svcframe.py tests/test_service_fuzz.py

mpy: $(STAMP)
	$(BIN)/python -m host_tools.deploy --board $(BOARD) --build-only

deploy: $(STAMP)
	$(BIN)/python -m host_tools.deploy --board $(BOARD) --port '$(PORT)'

clean:
	rm -rf build .pytest_cache

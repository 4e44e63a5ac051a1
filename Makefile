# Refund terminal firmware. `make demo` and `make test` are the two commands;
# both create .venv on demand from pyproject.toml (pinned versions).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BOARD ?= unix
PORT ?=

.PHONY: venv test demo bench soak mpy deploy clean vboard32 qemu

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
# (and through both service-link frame decoders, tests/test_svcframe.py); then the fuzz
# campaigns against the running firmware (host frames, ECR frames, service frames,
# printer status bytes, config files), each writing its results to build/soak/, and
# docs/reliability.md regenerated from them (host_tools/reliability.py).
SOAK_FUZZ := tests/test_fuzz_host.py tests/test_fuzz_ecr.py tests/test_service_fuzz.py \
	tests/test_fuzz_printer.py tests/test_fuzz_config.py
soak: $(STAMP)
	REFUND_FUZZ_N=$${REFUND_FUZZ_N:-10000} $(BIN)/python -m pytest -q -s -k "fuzz or parser or never_raises" \
	    tests/test_iso8583.py tests/test_ecr.py
	REFUND_FUZZ_N=$${REFUND_FUZZ_N:-10000} $(BIN)/python -m pytest -q -s tests/test_svcframe.py
	rm -rf build/soak
	REFUND_SOAK_DIR=build/soak REFUND_FUZZ_N=$${REFUND_FUZZ_N:-10000} $(BIN)/python -m pytest -q -s \
	    -k "fuzzed" $(SOAK_FUZZ)
	# Settlement and a whole shop day with the power cut at every flash write, clean and
	# torn, on 64 and 32 (tests/test_settle_powercut.py; make test runs a sample).
	REFUND_SOAK_DIR=build/soak REFUND_SETTLE_CUTS=all $(BIN)/python -m pytest -q -s tests/test_settle_powercut.py
	# The whole terminal: 1,000 refunds, 200 power cuts, host and printer faults, a
	# settlement every 200 refunds, reconciled (host_tools/soak.py) -> docs/reliability.json
	# soak_terminal.
	$(BIN)/python -m host_tools.soak --refunds $${SOAK_REFUNDS:-1000} --cuts $${SOAK_CUTS:-200} \
	    --seed $${SOAK_SEED:-1} --settle-every $${SOAK_SETTLE:-200} --out build/soak.json --reliability
	$(BIN)/python -m host_tools.reliability --collect build/soak

mpy: $(STAMP)
	$(BIN)/python -m host_tools.deploy --board $(BOARD) --build-only

deploy: $(STAMP)
	$(BIN)/python -m host_tools.deploy --board $(BOARD) --port '$(PORT)'

# MicroPython with the firmware frozen in (firmware/manifest.py), from MICROPY_SRC=DIR or
# ../shared/micropython/micropython-src.tar.gz (MICROPY_TARBALL=): host_tools/mpbuild.py.
# vboard32: the unix port 32-bit (gcc-multilib) -> refund-bench board|terminal --interp 32.
vboard32: $(STAMP)
	$(BIN)/python -m host_tools.mpbuild vboard32

# qemu: ports/qemu MPS2_AN385 (Cortex-M3, 96 KiB heap, littlefs on a RAM block device),
# then the firmware's board-independent tests under qemu-system-arm.
qemu: $(STAMP)
	$(BIN)/python -m host_tools.mpbuild qemu
	$(BIN)/python -m pytest -q tests/test_qemu.py

clean:
	rm -rf build .pytest_cache

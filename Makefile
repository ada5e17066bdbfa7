# The README's two commands: `make run` and `make test`. Both are idempotent.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= ./models
DEMO_DATA ?= breast_cancer
DEMO_MODEL ?= breast_cancer

export DO_NOT_TRACK := 1

.PHONY: run test install demo-model lint bench bench-train bench-drift grpc-stubs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cpu,data,train,dev,drift]'
	touch $(STAMP)

install: $(STAMP)

# Train the demo model only when the repository has no model at all.
demo-model: install
	@if [ -z "$$(ls -A $(MODELS) 2>/dev/null)" ]; then \
		echo "No model in $(MODELS): training the demo model ($(DEMO_DATA))..."; \
		$(BIN)/probserve train --data $(DEMO_DATA) --name $(DEMO_MODEL) --model-repository $(MODELS); \
	fi

run: demo-model
	$(BIN)/probserve serve --model-repository $(MODELS)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Five contenders; KServe and MLServer are installed (pinned) into .bench/ on the first run.
bench: demo-model
	$(BIN)/probserve bench --model-repository $(MODELS) --contenders all --results bench/results/latest.md

bench-train: install
	$(BIN)/python -m bench.train

# One `probserve drift run` over a 1M-row Parquet log of a 30-feature model: time and peak memory.
bench-drift: install
	$(BIN)/python -m bench.drift

# The gRPC messages and service stubs (service/grpc/*_pb2*), committed. protoc comes from a
# throwaway venv: grpcio-tools 1.78.0 bundles protobuf 6.31 (the generated code refuses a
# runtime older than its generator; we pin 6.33.6), and 1.85 would need protobuf 7, which
# tritonclient[grpc] forbids. mypy-protobuf writes the .pyi stubs.
GRPC_TOOLS ?= /tmp/probserve-grpc-tools
grpc-stubs:
	python3.11 -m venv $(GRPC_TOOLS)
	$(GRPC_TOOLS)/bin/pip install --quiet grpcio-tools==1.78.0 mypy-protobuf==5.1.0
	$(GRPC_TOOLS)/bin/python -m grpc_tools.protoc -I . \
		--plugin=protoc-gen-mypy=$(GRPC_TOOLS)/bin/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(GRPC_TOOLS)/bin/protoc-gen-mypy_grpc \
		--python_out=. --mypy_out=. --grpc_python_out=. --mypy_grpc_out=. \
		service/grpc/grpc_predict_v2.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

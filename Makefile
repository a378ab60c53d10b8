# recon-operator: every command a person runs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

REGISTRY ?= ghcr.io/recon-dev
VERSION  ?= 0.1.0
VENV   := .venv
PY     := $(VENV)/bin/python
export RECON_CACHE ?= $(HOME)/.cache/recon-operator

.PHONY: help bench-mesh-io bench-operator bench-operator-kueue bench-recon bench-sfm bench-worker-memory demo demo-down images lock kind-e2e venv system-deps k8s-bins cluster-up cluster-down cluster-status test test-images test-unit lint fmt generate clean

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

demo: venv k8s-bins ## Local cluster, Helm install, a CPU job on spot, outputs in .demo/ (KEEP=1 keeps it up)
	$(PY) tools/demo.py

demo-down: venv ## Stop what `KEEP=1 make demo` left running
	$(PY) tools/demo.py down

images: ## Build both images with constraints.txt's versions (starts Docker, makes a Debian base when none can be pulled)
	REGISTRY=$(REGISTRY) VERSION=$(VERSION) tools/images.sh

lock: venv ## Rewrite constraints.txt (the lock of the venv and both images) from the venv
	$(PY) tools/lock.py

kind-e2e: venv k8s-bins ## End-to-end tests on a kind cluster with the real images (needs Docker)
	tools/kind-e2e.sh

venv: ## Create or reuse .venv (this checkout's code over a shared, cached base of the dependencies)
	@tools/venv.sh

system-deps: ## Install the Debian packages the tests use (headless Chromium), when missing
	@tools/system-deps.sh

k8s-bins: ## Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, helm, kueue into the cache (once)
	@tools/k8s/build.sh

cluster-up: venv k8s-bins ## Start the local control plane and node agent (kubeconfig: .cluster/kubeconfig)
	PYTHONPATH=tools $(PY) -m localcluster up

cluster-down: venv ## Stop the local control plane
	PYTHONPATH=tools $(PY) -m localcluster down

cluster-status: venv ## Show the local control plane's components
	PYTHONPATH=tools $(PY) -m localcluster status

bench-operator: venv k8s-bins ## Operator benchmark: 500 ReconstructionJobs on kwok nodes (docs/benchmarks.md, docs/benchmarks/operator.json)
	PYTHONPATH=tools $(PY) tools/bench_operator.py

bench-operator-kueue: venv k8s-bins ## The same 500 through Kueue, GPU quota 50 (docs/benchmarks.md, docs/benchmarks/operator-kueue.json)
	PYTHONPATH=tools $(PY) tools/bench_operator.py --kueue-gpu-quota 50

bench-sfm: venv ## Real-capture benchmark: SfM time, registered share, mask IoU, the photos' gap split (docs/benchmarks.md, docs/benchmarks/sfm.json)
	mkdir -p .scratch
	$(PY) tools/bench_sfm.py run --out .scratch/bench-sfm.json
	$(PY) tools/bench_sfm.py masks --out .scratch/bench-sfm-masks.json
	$(PY) tools/bench_sfm.py docs .scratch/bench-sfm.json .scratch/bench-sfm-masks.json

bench-mesh-io: venv ## Mesh-file benchmark: the CPU steps of texture, validate and export at 60k and 328k faces (docs/benchmarks.md, docs/benchmarks/mesh-io.json)
	mkdir -p .scratch
	$(PY) tools/bench_mesh_io.py run --out .scratch/bench-mesh-io.json
	$(PY) tools/bench_mesh_io.py docs .scratch/bench-mesh-io.json --keep

bench-recon: venv ## Reconstruction benchmark: CPU draft here, GPU suite where CUDA is (docs/benchmarks.md, docs/benchmarks/recon.json)
	mkdir -p .scratch
	$(PY) tools/bench_recon.py run --suite cpu --out .scratch/bench-cpu.json
	if $(PY) -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then \
	  $(PY) tools/bench_recon.py run --suite gpu --out .scratch/bench-gpu.json; fi
	$(PY) tools/bench_recon.py docs .scratch/bench-*.json

bench-worker-memory: venv ## Worker memory benchmark: peak RSS of `recon-worker local` against views and resolution, per stage, and the reconstruct stage alone (docs/benchmarks.md, docs/benchmarks/worker-memory.json; on a GPU host: `tools/bench_worker_memory.py gpu`)
	mkdir -p .scratch
	$(PY) tools/bench_worker_memory.py run --out .scratch/bench-memory.json
	$(PY) tools/bench_worker_memory.py stages --out .scratch/bench-memory-stages.json
	$(PY) tools/bench_worker_memory.py reconstruct --note "$$(git rev-parse --short HEAD)" --out .scratch/bench-memory-reconstruct.json
	$(PY) tools/bench_worker_memory.py docs .scratch/bench-memory.json .scratch/bench-memory-stages.json .scratch/bench-memory-reconstruct.json

lint: venv ## ruff (lint and format check), mypy, and generated files up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) tools/generate.py --check

fmt: venv ## Format and auto-fix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

generate: venv ## Regenerate files derived from the CRD and the worker (docs/api.md, operator data)
	$(PY) tools/generate.py

test-unit: venv ## Unit tests only (no control plane, no Docker)
	$(PY) -m pytest -m "not cluster and not images" tests

# The images and the real kubelet node are tested by `make test-images`, not by `make test`: a cold worker
# image build takes about 35 minutes on 2 cores (deps 8 min, the nvdiffrast plugin 25 min even for one GPU
# family) and its tests, the e2e suite on the real node included, about 15 more; with the cold Go builds
# (27-49 min: 27 min for all of them on a fresh machine at load 8-11, 2026-12-02) and the suite (~13 min) that is about 2 hours, against CI's 90 minutes, as measured
# here under load (an idle CI machine may fit it: not measured yet; docs/install.md).
test: venv system-deps k8s-bins lint ## Everything CI checks: lint, types, unit and integration (real control plane, S3), end to end
	RECON_REQUIRE_CLUSTER=1 $(PY) -m pytest tests --ignore=tests/images --ignore=tests/realnode

test-images: venv system-deps k8s-bins images ## The two images run as the chart runs them; the real kubelet node, the e2e suite on it (needs root and Docker)
	RECON_REQUIRE_CLUSTER=1 $(PY) -m pytest tests/images tests/realnode

clean: ## Stop the local cluster; remove local state in the repo (the cached venv and binaries stay in $(RECON_CACHE))
	-[ -x $(PY) ] && [ -f .cluster/cluster.json ] && PYTHONPATH=tools $(PY) -m localcluster down
	rm -rf .cluster .demo .scratch .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf $(VENV)

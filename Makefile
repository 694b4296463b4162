# SmeetOn provisioning: entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help bootstrap image lint unit molecule test lab lab-converge lab-health lab-rotate lab-screenshot lab-status lab-destroy bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

bootstrap: ## Install apt packages and the pinned .venv (as root)
	bash scripts/bootstrap.sh

image: bootstrap ## Build or reuse the Debian 12 systemd test image
	bash scripts/build-test-image.sh

lint: ## yamllint, ansible-lint (production), ruff
	bash scripts/test.sh lint

unit: ## pytest suites in tests/ (unit and integration)
	bash scripts/test.sh pytest

molecule: ## Every molecule scenario (SMEETON_SCENARIOS="a b" to choose)
	bash scripts/test.sh molecule

test: ## THE test command: install, lint, unit tests, every molecule scenario
	bash scripts/test.sh

lab: ## THE main job on a local lab: podman hosts + playbooks/site.yml
	bash scripts/lab.sh up

lab-converge: ## Rerun site.yml on the existing lab
	bash scripts/lab.sh converge

lab-health: ## Run playbooks/health.yml on the lab (fleet table)
	bash scripts/lab.sh health

lab-rotate: ## Rotate the lab's BBB and TURN secrets (ARGS="-e ..." passes options)
	bash scripts/lab.sh rotate $(ARGS)

lab-screenshot: ## Load the lab's landing page in headless chromium (artifacts/lab/)
	bash scripts/lab.sh screenshot

lab-status: ## Show the lab hosts and how to reach them
	bash scripts/lab.sh status

lab-destroy: ## Remove the lab's containers and network (keeps lab-state/)
	bash scripts/lab.sh down

bench: ## Lab benchmarks (docs/benchmarks.md)
	python bench/bench_lab.py

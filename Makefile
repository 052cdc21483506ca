# GNU make. Needs only Python >= 3.11 (3.13 preferred: the Lambda runtime) and git; every tool
# comes from PyPI into a venv here. `make test` is the one command the README and CI run.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# The test steps run in the order written, also under `make -j`.
.NOTPARALLEL:

VENV := .venv
PY := $(VENV)/bin/python
# aws-sam-cli and checkov pin boto3 versions that exclude each other: one venv each.
SAM_VENV := .venv-sam
CHECKOV_VENV := .venv-checkov
# Linting and building need a region but no account; telemetry would call out.
SAM := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM_VENV)/bin/sam
BUILD_DIR := .aws-sam/build
PYTEST_ARGS ?=
ARGS ?=

.PHONY: help venv tools test lint unit pytest build run demo bench clean deploy

# make test and make build run sam build, which needs the Lambda runtime's Python: say so at once, in
# one line, before any venv is made or check run (make run, unit and demo need only 3.11+).
NEEDS_313 := $(filter test build,$(MAKECMDGOALS))
ifneq ($(NEEDS_313),)
ifeq ($(shell scripts/find-python --exact 3.13 2>/dev/null),)
$(error Python 3.13 is needed for make $(NEEDS_313) (sam build targets the python3.13 Lambda runtime); none found on PATH or in pyenv. Install it, or use make run, make unit or make demo, which need 3.11 or newer)
endif
endif

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

# uv installs in seconds what pip resolves in minutes (aws-sam-cli, checkov); pip bootstraps it.
UV_PIN := uv==0.13.9
UV := $(VENV)/bin/uv

# Creates venv $(1) with the Python scripts/find-python picks (which explains itself if none fits).
new_venv = test -x $(1)/bin/python || { py=$$(scripts/find-python) && "$$py" -m venv $(1); }

$(UV): scripts/find-python
	@$(call new_venv,$(VENV))
	$(PY) -m pip install --quiet --disable-pip-version-check $(UV_PIN)

# A stamp per venv: it is (re)installed when its requirements change, and only then.
define install_venv
@$(call new_venv,$(@D))
$(UV) pip install --quiet --python $(@D)/bin/python -r $<
@touch $@
endef

$(VENV)/.installed: requirements-dev.txt layers/apicbase_oauth/requirements.txt $(UV)
	$(install_venv)

.venv-%/.installed: requirements-%.txt $(UV)
	$(install_venv)

venv: $(VENV)/.installed ## Create or update .venv from requirements-dev.txt

tools: $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed

test: lint build pytest ## Everything CI runs: static checks, sam build, all test suites

lint: venv tools ## ruff, mypy, sam validate --lint, cfn-lint with serverless rules, checkov
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(SAM) validate --lint
	$(CHECKOV_VENV)/bin/cfn-lint template.yaml --append-rules cfn_lint_serverless.rules
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --quiet --compact --skip-download
	@# checkov sees only what the defaults deploy: also the stack with the callback's flood rule on.
	@mkdir -p .aws-sam
	$(PY) scripts/template-variant CallbackRateLimitPerIp=10 > .aws-sam/template-flood-rule-on.yaml
	$(CHECKOV_VENV)/bin/checkov -f .aws-sam/template-flood-rule-on.yaml --framework cloudformation --quiet --compact --skip-download
	@# ... and the stack that adopts a kept table, key and secret (docs/OPERATIONS.md).
	$(PY) scripts/template-variant ExistingTableName=kept-table \
	  ExistingKeyArn=arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000 \
	  ExistingSecretArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:kept-AbCdEf > .aws-sam/template-adopting.yaml
	$(CHECKOV_VENV)/bin/checkov -f .aws-sam/template-adopting.yaml --framework cloudformation --quiet --compact --skip-download
	@# And with the webhook on (WebhookUrl and its key set), for its Connection, rule, role and queue.
	$(PY) scripts/template-variant WebhookUrl=https://hooks.example.com/apicbase WebhookApiKey=placeholder > .aws-sam/template-webhook-on.yaml
	$(CHECKOV_VENV)/bin/cfn-lint .aws-sam/template-webhook-on.yaml --append-rules cfn_lint_serverless.rules
	$(CHECKOV_VENV)/bin/checkov -f .aws-sam/template-webhook-on.yaml --framework cloudformation --quiet --compact --skip-download

build: tools ## sam build for python3.13 on arm64 (pure-Python or manylinux aarch64 wheels)
	PATH="$$(dirname "$$(scripts/find-python --exact 3.13)"):$$PATH" $(SAM) build --build-dir $(BUILD_DIR)

pytest: venv
	$(PY) -m pytest $(PYTEST_ARGS) tests

unit: venv ## Unit tests only (no network, no processes)
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

deploy: venv tools ## sam build + sam deploy, asking only stack name and region (ARGS=--dry-run prints the commands)
	$(PY) scripts/deploy $(ARGS)

run: venv ## The broker on this machine against the sandbox (ARGS=... passes options)
	$(PY) -m local.run $(ARGS)

demo: venv ## A scripted walk through connect, token and refresh
	$(PY) -m local.demo $(ARGS)

bench: venv ## Benchmarks
	$(PY) -m bench $(ARGS)

clean: ## Remove build output and caches (the venvs stay)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./.venv -prune -o -path './.venv-*' -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

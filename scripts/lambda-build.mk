# How `sam build` builds the layer and every function (template.yaml: `BuildMethod: makefile`).
# SAM runs `make build-<LogicalId>` with a copy of the CodeUri as the working directory and
# ARTIFACTS_DIR set; it looks for a file named Makefile in each CodeUri, so each CodeUri's Makefile
# is a link to this one (SAM's build cache hashes the CodeUri, links followed: a change here
# rebuilds everything).
#
# What SAM's python3.13 builder did, plus bytecode: Lambda's /opt and /var/task are read-only,
# so a module shipped without its .pyc is compiled from source on every cold start
# (docs/BENCHMARKS.md). The .pyc are `unchecked-hash`: valid whatever the files' timestamps
# after zipping and unzipping, and the same bytes for the same sources.
#
# Needs python3.13 on PATH (as SAM's python3.13 builder does) and pip's access to PyPI.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

LAMBDA_PYTHON ?= python3.13
# The Lambda runtime's, for the bytecode's magic number and pip's wheel tags (template.yaml: Runtime).
PYTHON_VERSION := 3.13
# Lambda's python3.13 on arm64 has glibc 2.34: the wheels SAM's python builder accepts.
PLATFORMS := manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_28_aarch64 manylinux_2_34_aarch64
# The same bytes from every build: no hash seed reaches the bytecode (3.13 writes sets sorted;
# fixed all the same), and a cache prefix would put the .pyc elsewhere.
export PYTHONHASHSEED := 0
unexport PYTHONPYCACHEPREFIX

# Where the code goes in the artifact, and where Lambda mounts it (the path recorded in the .pyc).
build-%Layer: DEST = $(ARTIFACTS_DIR)/python
build-%Layer: RUNTIME_PATH = /opt/python
build-%Function: DEST = $(ARTIFACTS_DIR)
build-%Function: RUNTIME_PATH = /var/task

# Console scripts (bin/) are not reachable on Lambda, and their first line names this machine's
# Python. Every entry of the CodeUri but this file and requirements.txt is shipped: a package directory
# (or a link to one) added to the layer's CodeUri is built like apicbase_oauth.
build-%:
	@$(LAMBDA_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(PYTHON_VERSION)".split("."))))' \
		|| { echo "error: $(LAMBDA_PYTHON) must be Python $(PYTHON_VERSION), the Lambda runtime's" >&2; exit 1; }
	mkdir -p "$(DEST)"
	if [[ -f requirements.txt ]]; then \
		$(LAMBDA_PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile --target "$(DEST)" \
			--implementation cp --python-version $(PYTHON_VERSION) --only-binary=:all: \
			$(addprefix --platform ,$(PLATFORMS)) -r requirements.txt; \
		rm -rf "$(DEST)/bin"; \
	fi
	find . -mindepth 1 -maxdepth 1 ! -name Makefile ! -name requirements.txt -exec cp -RL {} "$(DEST)/" \;
	@# Only the bytecode compiled below: none left from a test run in the sources, none from a wheel.
	find "$(DEST)" -name __pycache__ -type d -prune -exec rm -rf {} +
	$(LAMBDA_PYTHON) -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$(DEST)" -p $(RUNTIME_PATH) "$(DEST)"

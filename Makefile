# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench reproduce clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m assembler.demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_check.py --compile
	$(BIN)/python benchmarks/bench_scaling.py --cpu
	$(BIN)/python benchmarks/bench_compiled.py
	$(BIN)/python benchmarks/bench_prefix_cache.py
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_tailored.py
	$(BIN)/python benchmarks/bench_backdistill_step.py
	$(BIN)/python benchmarks/l2tww_speed.py

# The papers' claims at digits scale, each under ~30 minutes on 2 cores.
reproduce: $(STAMP)
	$(BIN)/python benchmarks/nettailor_digits.py
	$(BIN)/python benchmarks/transplant_digits.py
	$(BIN)/python benchmarks/l2tww_digits.py
	$(BIN)/python benchmarks/compat_digits.py --seeds 0 1 2 3 4 5 6 7 8 9
	$(BIN)/python benchmarks/rank_digits.py

clean:
	rm -rf $(VENV) runs build *.egg-info

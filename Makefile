# The two commands a new user needs; both set themselves up (see scripts/).
.PHONY: run test bench lint

run:
	bash scripts/run.sh

# `make test tests/predictions` runs part of the suite; pytest options go in ARGS="-k cancel".
test:
	bash scripts/test.sh $(filter-out test,$(MAKECMDGOALS)) $(ARGS)

lint:
	bash scripts/setup.sh && .venv/bin/ruff check . && .venv/bin/ruff format --check .

# Lets `make test tests/some_dir` pass the path through instead of treating it as a target.
%:
	@:

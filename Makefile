# The two commands a new user needs; both set themselves up (see scripts/).
.PHONY: run test bench lint

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

lint:
	bash scripts/setup.sh && .venv/bin/ruff check . && .venv/bin/ruff format --check .

# The two commands a new user needs; both set themselves up (see scripts/).
.PHONY: run test bench lint flower

run:
	bash scripts/run.sh

# `make test tests/predictions` runs part of the suite; pytest options go in ARGS="-k cancel".
test:
	bash scripts/test.sh $(filter-out test,$(MAKECMDGOALS)) $(ARGS)

# Benchmarks (bench/): `make bench` runs single (with the floor), batch and memory, each on a
# stack of its own under var/bench/; `make bench single` runs one; BENCH_RUNS=3 repeats.
bench:
	bash scripts/setup.sh && .venv/bin/python -m bench $(filter-out bench,$(MAKECMDGOALS))

lint:
	bash scripts/setup.sh && .venv/bin/ruff check . && .venv/bin/ruff format --check .

# Flower (Celery's monitor) on the broker `make run` uses, or on REDIS_URL when set;
# FLOWER_PORT picks the port (5555), FLOWER_BASIC_AUTH=user:password protects it.
flower:
	bash scripts/setup.sh && DEBUG=$${DEBUG:-1} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:$${EMBEDDED_REDIS_PORT:-6390}/0} \
	.venv/bin/celery -A mlsite flower --address=127.0.0.1 --port=$${FLOWER_PORT:-5555}

# Lets `make test tests/some_dir` pass the path through instead of treating it as a target.
%:
	@:

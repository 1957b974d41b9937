# tagstream: `make run` starts the stack and shows data flowing; `make test` runs every test.
# Both install what they need: a .venv with the project, and the Kafka jars (Maven, cached in .cache/).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install jars lint test run stop status clean bench bench-quick chaos

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

jars: $(STAMP)
	$(BIN)/tagstream broker jars >/dev/null
	$(BIN)/tagstream registry jars >/dev/null

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: jars lint
	$(BIN)/pytest

# The demo flushes the loader every 5 s (default 60 s), gives the collector a write key, the
# enricher the generator's geofences (config/geofences.example.json), so GPS walks become visits,
# and the segmenter and trigger segments and campaigns that name what the generator produces.
DEMO_ENV := TAGSTREAM_LOADER_FLUSH_SECONDS=5 TAGSTREAM_COLLECTOR_WRITE_KEYS=demo-key=demo \
	TAGSTREAM_ENRICHER_GEOFENCE_FILE=$(CURDIR)/config/geofences.example.json \
	TAGSTREAM_SEGMENTER_DEFINITIONS_FILE=$(CURDIR)/config/demo/segments.yaml \
	TAGSTREAM_TRIGGER_CAMPAIGNS_FILE=$(CURDIR)/config/demo/campaigns.yaml

# Benchmarks: every stage against its baseline in one run (bench/run.py); results in bench/results/.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: jars $(BENCH_STAMP)
	$(BIN)/python bench/run.py

bench-quick: jars $(BENCH_STAMP)
	$(BIN)/python bench/run.py --quick --out .tagstream/bench

# Fault tests (tests/chaos.py): the long schedule, several minutes; a report, non-zero on a failed
# check; the services' logs stay in .tagstream/chaos/logs. `make test` runs the short one
# (tests/integration/test_chaos.py).
chaos: jars
	rm -rf .tagstream/chaos
	$(BIN)/python -m tests.chaos --long --workdir .tagstream/chaos --json .tagstream/chaos.json

run: jars
	$(DEMO_ENV) $(BIN)/tagstream stack up
	$(DEMO_ENV) $(BIN)/tagstream demo

stop: $(STAMP)
	$(BIN)/tagstream stack down

status: $(STAMP)
	$(BIN)/tagstream stack status

clean: stop
	rm -rf .tagstream

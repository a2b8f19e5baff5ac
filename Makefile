# Two commands on a fresh machine:
#   make demo   set everything up, then run a local swarm on the default model and open the app
#   make test   set everything up, then run the whole test suite
.PHONY: setup demo test lint bench

setup:
	./packaging/setup-dev.sh

demo: setup
	.venv/bin/corolla generate --model default --local --chat --greedy --max-new-tokens 48 \
		--prompt "What is the capital of France?"

test: setup
	QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q -ra --durations=15 tests

lint:
	.venv/bin/ruff check app core p2p ui tests bench

bench:
	.venv/bin/python bench/span_memory.py

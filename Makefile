# Two commands on a fresh machine:
#   make demo   set everything up, then run a local swarm on the default model and open the app
#   make test   set everything up, then run the whole test suite
.PHONY: setup demo test lint bench test-transformers-floor

setup:
	./packaging/setup-dev.sh

# With a display: the tray app and its chat window. Without one (a server, CI, ssh): the same
# local swarm with a terminal chat, which also reads piped input: echo "Hi" | make demo
demo: setup
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] || [ "$$(uname)" = Darwin ]; then \
		.venv/bin/corolla demo; \
	else \
		echo "==> no display found: chatting in the terminal (corolla demo --headless)"; \
		.venv/bin/corolla demo --headless; \
	fi

test: setup lint
	QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q -ra --durations=15 tests

# The lowest transformers pyproject.toml allows: the span code's import and exactness tests.
test-transformers-floor: setup
	./scripts/test_transformers_floor.sh

lint: setup
	.venv/bin/ruff check app core p2p ui tests bench

bench:
	.venv/bin/python bench/span_memory.py

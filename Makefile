# Two commands on a fresh machine:
#   make demo   set everything up, then run a local swarm on the default model and open the app
#   make test   set everything up, then run the whole test suite
#   make bundle the one-folder bundle, its Linux tarball, and the smoke test run from it (slow)
.PHONY: setup demo test lint bench test-transformers-floor bundle appimage

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

# The one-folder bundle (build/bundle/dist/corolla), the Linux tarball, then tests/test_bundle.py run
# against it. CPU-heavy (about half an hour on two busy cores): nice'd, and not part of `make test`.
BUNDLE_DIR = build/bundle
bundle: setup
	.venv/bin/python -m pip install -q -e ".[bundle]"
	nice -n 19 .venv/bin/pyinstaller --noconfirm --log-level WARN --distpath $(BUNDLE_DIR)/dist \
		--workpath $(BUNDLE_DIR)/work packaging/corolla.spec
	nice -n 19 ./packaging/linux/make-tarball.sh $(BUNDLE_DIR)/dist/corolla $(BUNDLE_DIR)
	COROLLA_BUNDLE_REQUIRED=1 .venv/bin/python -m pytest -q -ra -p no:cacheprovider tests/test_bundle.py
	@du -sh $(BUNDLE_DIR)/dist/corolla $(BUNDLE_DIR)/corolla-*.tar.gz

# An AppImage from the bundle (needs appimagetool on PATH; else it leaves the AppDir).
appimage:
	./packaging/linux/make-appimage.sh $(BUNDLE_DIR)/dist/corolla $(BUNDLE_DIR)

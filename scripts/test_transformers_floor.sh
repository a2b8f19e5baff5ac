#!/usr/bin/env bash
# The span code against the lowest transformers that pyproject.toml declares: import and exactness.
# The older release goes into its own folder, put in front of the project's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOR=$(sed -n 's/.*"transformers>=\([0-9.]*\),.*/\1/p' pyproject.toml)
DIR=.transformers-floor
if ! PYTHONPATH=$DIR .venv/bin/python -c "import transformers, sys; sys.exit(transformers.__version__ != '$FLOOR')" 2>/dev/null; then
    rm -rf "$DIR"
    # transformers 5.17 wants huggingface-hub 1.x; both go in the folder, nothing else changes.
    .venv/bin/pip install -q --no-deps --target "$DIR" "transformers==$FLOOR" "huggingface_hub>=1.5,<2"
fi
echo "==> transformers $FLOOR"
PYTHONPATH=$DIR .venv/bin/python -m pytest -q tests/core/test_span_exactness.py tests/core/test_batched_step.py

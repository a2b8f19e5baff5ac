import sys

from corolla.app.cli import main

sys.exit(main())

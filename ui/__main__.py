import sys

from corolla.ui.main import main

sys.exit(main())

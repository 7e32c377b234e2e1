"""python -m dmae.ops.pages: see dmae.ops.pages.cli."""

import sys

from dmae.ops.pages.cli import main

sys.exit(main())

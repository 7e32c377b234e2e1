"""python -m dmae.ops.dvc: see dmae.ops.dvc.cli."""

import sys

from dmae.ops.dvc.cli import main

sys.exit(main())

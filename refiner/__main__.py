"""``python -m refiner``: the command line (:mod:`refiner.cli`)."""

import sys

from refiner.cli import main

sys.exit(main())

import sys

from refiner.cli import main

sys.exit(main())

"""``python -m kdlab ...`` (what ``torchrun -m kdlab train ...`` runs)."""

import sys

from kdlab.cli import main

sys.exit(main())

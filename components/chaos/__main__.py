"""``python -m components.chaos``: the spec's six scenarios, or the fault matrix, run for real (see
``components.chaos.demo``)."""

import sys

from components.chaos.demo import main

sys.exit(main())

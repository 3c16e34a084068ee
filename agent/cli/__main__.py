"""`python -m agent.cli ...`: the same as `edgefleet-agent ...`."""

import sys

from agent.cli import main

sys.exit(main())

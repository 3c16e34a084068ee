"""`python -m agent.cli ...`: the same as `edgefleet-agent ...`."""

import sys

from agent.cli import main

if __name__ == "__main__":  # not when a spawned child (OpenVINO's pipeline) imports it
    sys.exit(main())

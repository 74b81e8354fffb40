"""`python -m fastfreeze.cli <command>`: the same as the `fastfreeze` command."""
import sys

from fastfreeze.cli import main

sys.exit(main())

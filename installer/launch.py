"""Entry script of the frozen build: the ``optiondesk`` CLI (no subcommand opens the window)."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the engine's process pool uses spawn
    from engine.cli import main

    sys.exit(main())

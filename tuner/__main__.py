"""``python -m tuner ...``: the entry point for ``ray job submit``."""

from tuner.cli import main

raise SystemExit(main())

"""``python -m snakemap``: the same as the ``snakemap`` command."""

from snakemap.cli import main

raise SystemExit(main())

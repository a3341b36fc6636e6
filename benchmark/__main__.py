"""``python -m benchmark`` is the same as the ``mtlbench`` console script."""

from .cli import main

raise SystemExit(main())

"""``python -m balfeat`` is the ``balfeat`` command."""

from balfeat.cli.main import main

raise SystemExit(main())

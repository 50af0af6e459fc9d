"""Command-line interface: parsing only. Each subcommand lives in its own module with
``add_parser(subparsers)``; the work is done by library functions imported lazily, so
``balfeat --help`` stays fast."""

"""One module per CLI subcommand: ``add(subparsers) -> parser`` and ``run(args) -> exit code``."""

"""One module per `mtil` subcommand; each has `add_arguments(parser)` and `execute(args) -> int`."""

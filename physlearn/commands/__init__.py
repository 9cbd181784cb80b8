"""Sub-commands of the `physlearn` CLI; each module has `add_parser(subparsers)` and `run(args)`."""

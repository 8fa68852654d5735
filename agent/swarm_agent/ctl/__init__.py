"""`swarmctl` subcommands: each module here defines `register(subparsers)`."""

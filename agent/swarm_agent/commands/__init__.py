"""`swarm-agent` subcommands: each module here defines `register(subparsers)`."""

"""``mer`` subcommands owned by the engines package (see streamer/cli.py)."""

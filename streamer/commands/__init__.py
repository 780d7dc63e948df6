"""``mer`` subcommands owned by the streamer package (see streamer/cli.py)."""

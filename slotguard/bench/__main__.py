"""`python -m slotguard.bench`: see `slotguard.bench.run`."""

from slotguard.bench.run import cli

if __name__ == "__main__":
    cli()

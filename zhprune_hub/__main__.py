"""`python -m zhprune_hub` runs the CLI."""

from zhprune_hub.cli import main

main()

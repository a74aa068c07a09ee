"""`python -m msrpd` is the `msrpd` command."""

from .cli import main

main()

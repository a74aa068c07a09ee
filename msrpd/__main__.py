"""`python -m msrpd` is the `msrpd` command."""

from .cli.main import main

main()

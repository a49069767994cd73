"""`python -m promo.cli`: the command line."""

from promo.cli import main

main()

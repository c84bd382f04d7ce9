"""`python -m tlkit` == `tlkit`."""

from tlkit.cli import main

main()

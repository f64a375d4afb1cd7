"""``python -m speechstream.cli``."""

from speechstream.cli import main

main()

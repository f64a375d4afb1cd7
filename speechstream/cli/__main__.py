"""``python -m speechstream.cli``."""

from speechstream.cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn imports this module in a worker
    main()

"""``python -m hpsearch``: the same command as ``hpsearch``."""

from hpsearch.cli import main

if __name__ == "__main__":  # not on a plain import (pkgutil walks, documentation tools)
    main()

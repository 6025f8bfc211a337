"""``python -m branchnet``: the same as the ``branchnet`` console script."""

from branchnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m cbdsl``: the same entry point as the ``cbdsl`` console script."""

from cbdsl.entry import main

if __name__ == "__main__":
    main()

"""`python -m attrib.cli` (as `python -m attrib`)."""

from attrib.cli import main

if __name__ == "__main__":
    main()

"""``python -m assay``: the ``assay`` command line, for environments where the script is not on PATH."""

from assay.cli import main

if __name__ == "__main__":
    main()

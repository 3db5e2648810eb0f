"""Command line for the phantom data sets: ``python -m common.phantoms make --task ... --out_dir ... --n_cases ...``."""

from common.phantoms.cli import main

if __name__ == "__main__":
    main()

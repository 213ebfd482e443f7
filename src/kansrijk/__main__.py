"""``python -m kansrijk``: the same command as the ``kansrijk`` script (the demo starts the gate service so)."""

from kansrijk.cli import main

if __name__ == "__main__":
    main()

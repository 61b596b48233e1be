"""``python -m taskvisor``: the same as the ``taskvisor`` command."""

from taskvisor._cli import main

if __name__ == "__main__":
    raise SystemExit(main())

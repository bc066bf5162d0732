"""``python -m paramscope``: the same CLI as the ``paramscope`` command."""

from paramscope.cli import main

if __name__ == "__main__":
    main()

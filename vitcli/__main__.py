"""`python -m vitcli ...` (also what `torchrun -m vitcli ...` runs)."""

from vitcli.cli import main

if __name__ == "__main__":
    main()

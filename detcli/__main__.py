"""``python -m detcli`` is ``det`` (and what ``torchrun -m detcli`` runs)."""

from detcli.cli.main import main

main()

"""``python -m steplabel.cli``: the same app as the ``steplabel`` command."""

from steplabel.cli.main import app

app()

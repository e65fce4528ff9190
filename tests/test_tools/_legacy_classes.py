"""A harmless custom class, as old training code pickled into its checkpoints.

Importable by a tool subprocess (``tests.test_tools._legacy_classes`` with the repository on
``PYTHONPATH``), so that a trusted conversion can unpickle it.
"""


class TrainingNote:
    """Metadata object a legacy trainer stored in ``meta`` (not a tensor, not allow-listed)."""

    def __init__(self, text, epoch):
        self.text = text
        self.epoch = epoch

    def __repr__(self):
        return f'TrainingNote({self.text!r}, epoch={self.epoch})'

"""Datasets shared by several subtrees. Not imported by ``import common``: ``digits`` registers
``DigitsDataset`` in mmpretrain's ``DATASETS`` (importing mmpretrain), so it is imported by the
subtrees that use it (``classification_distill.datasets``) or by name (``common.datasets.digits``).
"""

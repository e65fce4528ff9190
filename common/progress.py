"""Progress bars for long loops, one definition for every subtree and tool.

The one rule: a bar is drawn only when stderr is a terminal; in logs, CI and subprocess
captures the loop runs bare, so no carriage-return noise ends up in files.
"""
import sys


def progress(iterable, desc, total=None):
    """``tqdm`` over ``iterable`` when stderr is a terminal; the bare iterable otherwise."""
    if not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency of the stack
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False)

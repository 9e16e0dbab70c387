"""The Gradio demo (``medssl-demo``): an extra, ``pip install 'medssl-zoo[demo]'``."""

import sys


def main(argv: list[str] | None = None) -> int:
    """``medssl-demo``: one line (not a traceback) when the demo's extra is not installed."""
    from zoo.optional import MissingExtraError

    try:
        from medssl_zoo.demo.app import main as run_demo
    except MissingExtraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_demo(argv)

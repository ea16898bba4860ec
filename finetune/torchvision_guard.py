"""A torchvision that cannot load must not take every model down with it.

PyPI's torchvision wheel is a CUDA build; beside a CPU torch (or any torch it was not built for) its
compiled ops fail to register and ``import torchvision`` raises ``RuntimeError: operator torchvision::nms
does not exist``. transformers sees the package installed, imports it on the way to a model class, and
then cannot import ``LlavaForConditionalGeneration`` or any other: the built-in tiny fails too. Nothing
in this kit needs torchvision (the PIL image processors give the same pixels), so a torchvision that
fails to import is set aside for the process, as if it were not installed, and the run says so once.
"""
from __future__ import annotations

import importlib.util
import sys


def set_aside_broken_torchvision() -> str | None:
    """Make a torchvision that raises on import look absent (to transformers too); returns why, or None."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return None
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return None   # transformers handles a missing one itself
    except Exception as e:  # noqa: BLE001 - any failure of its own import (RuntimeError from its ops, ...)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        # None in sys.modules: find_spec answers None (transformers' availability check) and import fails
        # with ModuleNotFoundError, which the image-processor fallbacks expect.
        sys.modules["torchvision"] = None
        why = (f"torchvision is installed but does not load ({(str(e).strip() or type(e).__name__).splitlines()[0]}); "
               "running without it. Install the torchvision build that matches your torch, or uninstall it.")
        print(f"warning: {why}", file=sys.stderr)
        return why
    return None

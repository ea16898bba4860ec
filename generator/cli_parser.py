"""argparse for our command lines: every error is one line on stderr and exit code 2, no usage block."""
from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


class OneLineParser(argparse.ArgumentParser):
    """``error_prog`` names the tool in messages (a sub-command's parser still speaks as the tool)."""

    def __init__(self, *args, error_prog: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.error_prog = error_prog or self.prog

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        # argparse prefixes "argument --rows: "; our type checks already name the flag.
        match = re.fullmatch(r"argument (\S+): (.*)", message, flags=re.S)
        if match and match[2].startswith(match[1].split("/")[0]):
            message = match[2]
        fail(self.error_prog, message)

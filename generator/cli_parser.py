"""argparse for our command lines: every error is one line on stderr and exit code 2, no usage block."""
from __future__ import annotations

import argparse
import errno
import os
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


def path_arg(flag: str):
    """argparse type for a path: one the file system cannot even look up (a name over 255 bytes, a path
    over 4,096) is bad input here, not an OSError from the first ``exists()`` deep inside the tool; so is
    one whose bytes are not UTF-8 (pyarrow reads and writes UTF-8 paths only: a UnicodeEncodeError)."""
    def parse(text: str) -> str:
        shown = text if len(text) <= 60 else f"{text[:40]}...{text[-15:]}"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes of a file name come to Python as lone surrogates
            raise argparse.ArgumentTypeError(f"{flag} {shown!r} is not UTF-8 text: rename it (the dataset files "
                                             "are read and written by pyarrow, which takes UTF-8 paths only)") from None
        try:
            os.lstat(text)
        except OSError as err:
            if err.errno == errno.ENAMETOOLONG:
                raise argparse.ArgumentTypeError(
                    f"{flag} {shown!r} is too long for the file system ({len(text):,} characters; "
                    "a name holds at most 255 bytes): choose a shorter path") from None
        except ValueError:  # a NUL character: no command line has one, a Python caller might
            raise argparse.ArgumentTypeError(f"{flag} holds a NUL character") from None
        return text
    return parse

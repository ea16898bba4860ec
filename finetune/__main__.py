"""``python -m finetune`` is ``run-finetune``."""
from finetune.cli import entry

entry()

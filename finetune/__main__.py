"""``python -m finetune`` is ``run-finetune``."""
from finetune.cli import main

raise SystemExit(main())

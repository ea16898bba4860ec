"""``python -m generator`` is ``gen-samples``."""
from generator.cli import main

raise SystemExit(main())

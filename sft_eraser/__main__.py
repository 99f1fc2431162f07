import sys

from sft_eraser.cli import main

sys.exit(main())

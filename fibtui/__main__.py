import sys

from fibtui.cli import main

sys.exit(main())

import sys

from bonas.cli import main

sys.exit(main())

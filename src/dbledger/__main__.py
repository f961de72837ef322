import sys

from dbledger.cli import main

sys.exit(main())

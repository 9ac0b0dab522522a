import sys

from ticketsearch.cli import main

sys.exit(main())

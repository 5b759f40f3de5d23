import sys

from pixgen.cli import main

sys.exit(main())

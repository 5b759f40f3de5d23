import sys

from pixgen.cli.app import main

sys.exit(main())

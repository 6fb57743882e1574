import sys

from reparam_zoo.cli.app import main

sys.exit(main())

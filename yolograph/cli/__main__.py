import sys

from yolograph.cli import main

sys.exit(main())

"""``python -m rats_ros`` is ``rats-ros``."""
import sys

from rats_ros.tools.cli import main

sys.exit(main())

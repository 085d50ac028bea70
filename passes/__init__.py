"""Built-in passes, one per module; each registers itself on import (every module here is loaded)."""

from yolograph.plugins import import_submodules

import_submodules(__name__, __path__)

"""Protocol layers and middleware: each module is a built-in plugin that registers its types."""

import framework  # noqa: F401  (first: installs the compiled-module finder, framework/_compiled.py)

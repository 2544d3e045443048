"""Protocol layers and middleware: each module is a built-in plugin that registers its types."""

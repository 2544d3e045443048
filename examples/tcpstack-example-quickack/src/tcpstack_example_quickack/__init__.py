"""tcpstack-example-quickack: an example third-party tcpstack plugin (the per-connection
feature ``quickack``). tcpstack loads :mod:`tcpstack_example_quickack.plugin` through the
``tcpstack`` entry-point group; nothing needs to import this package by hand."""

__version__ = "0.1.0"

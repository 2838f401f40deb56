"""The ``ego-ros`` command line. One module per subcommand; see ``main.py``."""

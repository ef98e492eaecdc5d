"""Command-line flags that library modules name in their messages: defined here, so that the command modules
declare them without importing the library (the CLI parses before it imports torch) and the library never
imports the CLI."""

PATH_CHECK_OPT_OUT = "--no-path-check"  # skips the pre-flight's path checks (paths that exist only on compute nodes)

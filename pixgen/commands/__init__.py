"""The command groups of the command line, beside pixgen.cli: each parses its arguments, calls
the library and reports. No torch at import."""

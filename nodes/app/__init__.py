"""Plain-Python applications over the engines: the batch pipeline and the command line."""

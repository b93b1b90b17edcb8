"""Studies, search spaces, training, the Python API (`from search import api`) and the command line of archsearch."""

"""Studies, search spaces, training and the command line of archsearch."""

from search.cli import run  # loads only the standard library: run() holds Ctrl-C and SIGTERM before anything else

run()

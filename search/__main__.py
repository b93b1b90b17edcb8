from search.cli import run

run()

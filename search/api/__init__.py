"""archsearch from Python: one function per command, keyword arguments named as the flags' settings,
typed results (rows a DataFrame takes, records, plotly Figures). The CLI (search/cli) is a thin layer
over these functions, so both check the same things and fail with the same one-line message (naming
keyword arguments where the CLI names flags). Each record of a call that ran or read a study holds its
optuna.Study (`optuna_study`); importing this package changes none of Optuna's settings.

    from search import api as archsearch

    run = archsearch.search("profiles-50k", study="demo", trials=3, epochs=1, data_limit=2000)
    run.best                                  # BestTrial: widths, params, validation and test scores
    pandas.DataFrame(archsearch.trials("demo"))
    archsearch.figures("demo")["loss-vs-params"]   # a plotly Figure, shown inline in a notebook

Bad input raises UsageError; Ctrl-C (a kernel interrupt) marks the running trials failed and raises
Interrupted, whose message is the command that resumes (calling the function again does the same).
"""

from search.api.basics import Baseline, BudgetTable, InitStudy, baseline, budget_table, init_study
from search.api.frontier import Frontier, frontier, frontier_of
from search.api.joining import WorkerRun, worker
from search.api.reading import Exported, FrontierBest, Report, best, export, figures, report, trials
from search.api.serving import dashboard
from search.api.studies import GridRun, SearchRun, grid, search
from search.errors import Interrupted, UsageError
from search.results.tables import BestTrial, GridRow, Retrained, TrialRow
from search.study.config import presets

__all__ = [
    "Baseline",
    "BestTrial",
    "BudgetTable",
    "Exported",
    "Frontier",
    "FrontierBest",
    "GridRow",
    "GridRun",
    "InitStudy",
    "Interrupted",
    "Report",
    "Retrained",
    "SearchRun",
    "TrialRow",
    "UsageError",
    "WorkerRun",
    "baseline",
    "best",
    "budget_table",
    "dashboard",
    "export",
    "figures",
    "frontier",
    "frontier_of",
    "grid",
    "init_study",
    "presets",
    "report",
    "search",
    "trials",
    "worker",
]

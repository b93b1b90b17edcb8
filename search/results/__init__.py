"""Reading finished work: trial tables, plots, the report, exports and the dashboard. Imports the study layer,
plotly and optuna-dashboard; never torch, so a report or an export starts in a fraction of a second."""

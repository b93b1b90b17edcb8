"""archsearch budget: the parameter math for one budget."""

from __future__ import annotations

import json
from dataclasses import asdict

from search import api
from search.api.args import budget, depth_list
from search.cli.common import add_json_option

HELP = "show Parameters(k, m), the depth range and m_P(k) for a parameter budget"


def add_arguments(parser) -> None:
    parser.add_argument("budget", type=budget, help="the parameter budget P")
    parser.add_argument("--depths", type=depth_list, help="depths to tabulate, e.g. 1,2,4,8 (default: 1..8 that fit)")
    add_json_option(parser)


def run(args) -> int:
    table = api.budget_table(args.budget, args.depths)
    if args.json:
        print(json.dumps(asdict(table)))
        return 0
    print("Parameters(k, m) = (k-1)m^2 + (794+k)m + 10")
    print(f"budget P = {table.budget}: depth k from {table.min_depth} to {table.max_depth} (the largest at width 1)")
    print(f"{'k':>4} {'m_P(k)':>8} {'params':>10} {'rel. error':>11}")
    for row in table.rows:
        print(f"{row.depth:>4} {row.width:>8} {row.params:>10} {row.rel_error:>+11.4%}")
    return 0

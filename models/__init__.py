"""Networks and the parameter math behind them."""

"""The compatibility engine (pure): the checks of one object on one kernel, and the analyses
behind them."""

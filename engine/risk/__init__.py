"""Risk: the slider profile and limits, pre-trade checks, kill switch, portfolio Greeks, VaR, scenarios, regimes."""

"""ML signals for strategies: point-in-time features, trade-outcome labels, purged walk-forward validation.

Headless (no Qt). xgboost is imported only inside the functions that train or load an XGBoost model, so
importing this package costs numpy, pandas and scikit-learn only. See docs/ml.md.
"""

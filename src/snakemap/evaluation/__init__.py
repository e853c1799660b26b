"""How good the predictors are at the calval sites: class maps scored against labels, baselines,
thresholds tuned out of fold, the winner per class, and the report's figures.
"""

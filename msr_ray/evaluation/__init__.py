"""Judging recommenders: ranking metrics with bootstrap intervals, the sequential baselines
scored under the same protocol, and the HTML report of a run."""

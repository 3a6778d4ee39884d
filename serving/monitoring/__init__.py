"""Model monitoring: reference distributions, drift and data quality, alerts, the monitor report."""

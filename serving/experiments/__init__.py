"""Shadow models and A/B experiments: deployments, assignment, prediction logs, reports."""

"""The ``/ui`` dashboard: server-rendered HTML with a vendored Chart.js (works offline)."""

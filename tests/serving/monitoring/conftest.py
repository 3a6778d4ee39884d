from tests.serving.monitoring.worker_world import worker_env  # noqa: F401 - a shared fixture

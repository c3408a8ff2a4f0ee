"""docker-compose.yml cannot run here (no Docker engine, no compose plugin), so its
structure and its consistency with the settings and the local runner are checked."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_shared_volume():
    compose = load()
    services = compose["services"]
    assert {
        "postgres",
        "redis",
        "web",
        "worker",
        "gpu-worker",
        "beat",
        "migrate",
    } <= set(services)
    for name in ("web", "worker", "gpu-worker", "beat", "migrate"):
        service = services[name]
        assert "artifacts:/artifacts" in service["volumes"], name
        env = service["environment"]
        assert env["ARTIFACTS_DIR"] == "/artifacts"
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://")
        assert env["DEBUG"] == "0"
    assert "artifacts" in compose["volumes"]


def test_worker_commands_match_the_queues():
    services = load()["services"]
    gpu = services["gpu-worker"]["command"]
    assert gpu[gpu.index("-Q") + 1] == "gpu"
    assert gpu[gpu.index("--concurrency") + 1] == "1"
    assert gpu[gpu.index("--prefetch-multiplier") + 1] == "1"
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    default = services["worker"]["command"]
    assert default[default.index("-Q") + 1] == "default"
    assert services["web"]["command"][:2] == ["gunicorn", "config.wsgi:application"]
    assert "beat" in services["beat"]["command"]

    from django.conf import settings

    declared = {queue.name for queue in settings.CELERY_TASK_QUEUES}
    assert declared == {"default", "gpu"}


def test_web_collects_static_files_before_gunicorn():
    """WhiteNoise serves STATIC_ROOT; compose's web fills it at start (the browser
    test tests/e2e/test_production_browser.py runs this entrypoint literally)."""
    web = load()["services"]["web"]
    entrypoint = web["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"]
    script = entrypoint[2]
    assert script.index("collectstatic --noinput") < script.index('exec "$$@"')
    assert web["command"][0] == "gunicorn"

    from django.conf import settings

    middleware = settings.MIDDLEWARE
    assert middleware.index("whitenoise.middleware.WhiteNoiseMiddleware") == (
        middleware.index("django.middleware.security.SecurityMiddleware") + 1
    )


def test_make_run_with_debug_off_runs_composes_web_command():
    """`make run` with DEBUG=0 starts gunicorn with compose's own arguments."""
    from config import devservices, env

    command = load()["services"]["web"]["command"]
    assert command[:2] == ["gunicorn", "config.wsgi:application"]
    bind = command.index("--bind")
    assert command[bind + 2 :] == devservices.GUNICORN_ARGS
    assert devservices.ENV_TRUE == env._TRUE  # DEBUG read the way the settings do

"""The sampler backend per project (issue 19 item 1): one validator of the backend's
settings (the API, the settings page and the service ask it; secrets are refused,
never echoed), the round's sampler frozen from the project without the key, the key
read from the named environment variable when the round runs, and a round driven
through the ``openai`` backend against a real OpenAI-compatible HTTP server on
127.0.0.1 — plus the dead and the silent server, each failing with its URL."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from labelapp import jobs
from labelapp.errors import ValidationFailed
from labelapp.loop import rounds
from labelapp.models import Comparison, Job, Project, Response, Round
from labelapp.queue import comparison_next_for
from labelapp.services.content import prompt_create
from labelapp.services.projects import (
    project_settings_problems,
    project_update,
    sampler_config_problems,
)
from tests.frontend.conftest import client_for
from tests.frontend.test_project_pages import settings_data
from tests.labelapp.conftest import make_project, make_user

SECRET = "sk-test-0123456789abcdef"
GOOD = {"base_url": "http://127.0.0.1:8000/v1", "model": "tiny"}


def test_the_backends_are_the_training_packages():
    from training.sampling import BACKENDS

    assert tuple(Project.SamplerBackend.values) == BACKENDS


# --- the one validator ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "config", "problem"),
    [
        ("openai", {"model": "tiny"}, "base_url: required by the openai backend"),
        ("openai", {"base_url": GOOD["base_url"]}, "model: required by the openai"),
        ("openai", {**GOOD, "temperature": 1}, "temperature: unknown setting of the"),
        ("transformers", {"base_url": "http://h/v1"}, "it takes none (send {})"),
        ("vllm", {"model": "x"}, "model: unknown setting of the vllm backend"),
        ("openai", {**GOOD, "timeout_s": "10"}, "timeout_s: must be a number"),
        ("openai", {**GOOD, "timeout_s": 0}, "timeout_s: must be a number > 0"),
        ("openai", {**GOOD, "timeout_s": 1e9}, "timeout_s: must be a number > 0"),
        ("openai", {**GOOD, "max_retries": 1.5}, "max_retries: must be an integer"),
        ("openai", {**GOOD, "max_retries": True}, "max_retries: must be an integer"),
        ("openai", {**GOOD, "max_retries": 99}, "max_retries: must be an integer from"),
        ("openai", {**GOOD, "max_concurrency": 0}, "max_concurrency: must be an int"),
        ("openai", {**GOOD, "model": 7}, "model: must be a string"),
        ("openai", {**GOOD, "model": " "}, "model: must not be empty"),
        (
            "openai",
            {**GOOD, "mode": "stream"},
            "mode: must be one of chat, completions",
        ),
        ("openai", {**GOOD, "base_url": "ftp://h/v1"}, "base_url: must be an http://"),
        ("openai", {**GOOD, "base_url": "file:///etc/x"}, "base_url: must be an http"),
        ("openai", {**GOOD, "base_url": "http://"}, "base_url: must be an http://"),
        ("openai", {**GOOD, "base_url": "http://h:99999"}, "base_url: not a valid URL"),
        ("openai", {**GOOD, "api_key_env": "MY KEY"}, "api_key_env: must be an env"),
        ("openai", {**GOOD, "api_key_env": None}, "api_key_env: must be a string"),
        ("openai", [GOOD], "Must be an object"),
        ("gpt", {}, "unknown sampler backend"),
    ],
)
def test_each_problem_is_named(backend, config, problem):
    problems = sampler_config_problems(backend, config)
    assert problem in " | ".join(problems), problems


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({**GOOD, "api_key": "plain-value"}, "api_key"),
        ({**GOOD, "token": "plain-value"}, "token"),
        ({**GOOD, "client_secret": "plain-value"}, "client_secret"),
        ({**GOOD, "password": "plain-value"}, "password"),
        ({**GOOD, "OPENAI_API_KEY": "plain-value"}, "OPENAI_API_KEY"),
        ({**GOOD, "model": SECRET}, "model"),
        ({**GOOD, "api_key_env": SECRET}, "api_key_env"),
        ({**GOOD, "mode": "Bearer plain-value"}, "mode"),
        ({**GOOD, "model": "hf_plain-value"}, "model"),
        ({**GOOD, "base_url": "https://me:plain-value@h/v1"}, "base_url"),
    ],
)
def test_secrets_are_refused_and_never_echoed(config, named):
    problems = sampler_config_problems("openai", config)
    assert len(problems) == 1 and problems[0].startswith(f"{named}: "), problems
    assert "secrets are not stored" in problems[0]
    assert "plain-value" not in problems[0] and SECRET not in problems[0]


def test_a_secret_pasted_as_a_settings_name_is_not_echoed():
    problems = sampler_config_problems("openai", {**GOOD, SECRET: 1})
    assert problems == [
        "a setting's name looks like a secret (not shown); secrets are not stored"
    ]


def test_good_settings_have_no_problems():
    full = {
        **GOOD,
        "api_key_env": "PAIRLOOP_SAMPLER_KEY",
        "mode": "completions",
        "timeout_s": 30,
        "max_retries": 0,
        "max_concurrency": 4,
    }
    assert sampler_config_problems("openai", full) == []
    assert sampler_config_problems("openai", {**GOOD, "base_url": "https://h"}) == []
    assert sampler_config_problems("transformers", {}) == []
    assert sampler_config_problems("vllm", {}) == []


@pytest.mark.django_db
def test_a_change_of_one_field_is_checked_against_the_others_stored_value():
    project = make_project(sampler_backend="openai", sampler_config=GOOD)
    # Back to transformers with the openai settings left in place: refused.
    found = project_settings_problems(
        {"sampler_backend": "transformers"}, project=project
    )
    assert (
        list(found) == ["sampler_config"]
        and "base_url: unknown" in found["sampler_config"][0]
    )
    assert (
        project_settings_problems(
            {"sampler_backend": "transformers", "sampler_config": {}}, project=project
        )
        == {}
    )
    # A new config alone is checked against the stored openai backend.
    found = project_settings_problems({"sampler_config": {}}, project=project)
    assert "base_url: required" in " ".join(found["sampler_config"])


@pytest.mark.django_db
def test_the_service_refuses_and_saves_nothing():
    project = make_project()
    admin = make_user(project=project, role="admin")
    with pytest.raises(ValidationFailed, match="api_key: secrets are not stored"):
        project_update(
            project=project,
            by=admin,
            changes={
                "sampler_backend": "openai",
                "sampler_config": {**GOOD, "api_key": SECRET},
            },
        )
    project.refresh_from_db()
    assert (project.sampler_backend, project.sampler_config) == ("transformers", {})
    project, _ = project_update(
        project=project,
        by=admin,
        changes={"sampler_backend": "openai", "sampler_config": GOOD},
    )
    project.refresh_from_db()
    assert (project.sampler_backend, project.sampler_config) == ("openai", GOOD)


# --- the API --------------------------------------------------------------------------


@pytest.fixture
def admin_api(db) -> tuple[APIClient, Project]:
    project = make_project()
    client = APIClient()
    client.force_authenticate(make_user(project=project, role="admin"))
    return client, project


def test_api_reads_and_patches_both_fields(admin_api):
    client, project = admin_api
    url = f"/api/v1/projects/{project.pk}/"
    got = client.get(url).json()
    assert (got["sampler_backend"], got["sampler_config"]) == ("transformers", {})
    config = {**GOOD, "api_key_env": "PAIRLOOP_SAMPLER_KEY", "max_retries": 1}
    response = client.patch(
        url, {"sampler_backend": "openai", "sampler_config": config}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["sampler_config"] == config
    project.refresh_from_db()
    assert (project.sampler_backend, project.sampler_config) == ("openai", config)


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"sampler_backend": "gpt"}, "sampler_backend", "not a valid choice"),
        (
            {"sampler_backend": "openai", "sampler_config": {"model": "m"}},
            "sampler_config",
            "base_url: required",
        ),
        (
            {
                "sampler_backend": "openai",
                "sampler_config": {**GOOD, "base_url": "ftp://x"},
            },
            "sampler_config",
            "base_url: must be an http",
        ),
        (
            {
                "sampler_backend": "openai",
                "sampler_config": {**GOOD, "api_key": SECRET},
            },
            "sampler_config",
            "api_key: secrets are not stored",
        ),
        # The stored backend is transformers: openai settings alone are refused.
        ({"sampler_config": GOOD}, "sampler_config", "unknown setting"),
        ({"sampler_config": "nope"}, "sampler_config", "Must be an object"),
    ],
)
def test_api_bad_values_are_a_400_naming_the_field(admin_api, body, field, problem):
    client, project = admin_api
    response = client.patch(f"/api/v1/projects/{project.pk}/", body, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()
    assert list(errors) == [field], errors
    assert problem in json.dumps(errors)
    assert SECRET not in response.content.decode()
    project.refresh_from_db()
    assert (project.sampler_backend, project.sampler_config) == ("transformers", {})


# --- the settings page ----------------------------------------------------------------


@pytest.fixture
def admin_page(db, settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path
    project = make_project()
    client = client_for(make_user(project=project, role="admin"))
    return client, project, reverse("frontend:project-settings", args=[project.pk])


def test_settings_page_saves_the_backend(admin_page):
    client, project, url = admin_page
    page = client.get(url).content.decode()
    assert 'name="sampler_backend"' in page and 'name="sampler_config"' in page
    data = settings_data(
        project, sampler_backend="openai", sampler_config=json.dumps(GOOD)
    )
    response = client.post(url, data)
    assert response.status_code == 302, response.context["form"].errors
    project.refresh_from_db()
    assert (project.sampler_backend, project.sampler_config) == ("openai", GOOD)


def test_settings_page_refuses_a_secret_and_does_not_show_it_again(admin_page):
    client, project, url = admin_page
    data = settings_data(
        project,
        sampler_backend="openai",
        sampler_config=json.dumps({**GOOD, "api_key": SECRET}),
    )
    response = client.post(url, data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "api_key: secrets are not stored" in errors["sampler_config"][0]
    assert SECRET not in response.content.decode()
    project.refresh_from_db()
    assert (project.sampler_backend, project.sampler_config) == ("transformers", {})
    # The other problems are the same validator's words.
    bad = settings_data(project, sampler_backend="openai", sampler_config="{}")
    errors = client.post(url, bad).context["form"].errors
    assert "base_url: required by the openai backend" in errors["sampler_config"]


# --- the round's sampler: frozen without the key, the key from the environment ----------


def _running_job(project: Project) -> Job:
    job = Job.objects.create(project=project, kind="round")
    Job.objects.filter(pk=job.pk).update(status="running", worker="t", attempts=1)
    job.refresh_from_db()
    return job


def _project_with_prompts(n: int = 3, **fields: Any) -> Project:
    fields.setdefault("n_samples", 3)
    fields.setdefault("max_new_tokens", 8)
    project = make_project(overlap=1, **fields)
    for i in range(n):
        prompt_create(
            project=project, messages=[{"role": "user", "content": f"question {i}"}]
        )
    return project


@pytest.mark.django_db
def test_the_round_freezes_backend_model_and_config_without_the_key(monkeypatch):
    monkeypatch.setenv("PL_TEST_SAMPLER_KEY", SECRET)
    config = {**GOOD, "api_key_env": "PL_TEST_SAMPLER_KEY", "timeout_s": 5}
    project = _project_with_prompts(sampler_backend="openai", sampler_config=config)
    rnd = rounds._round_for_job(_running_job(project))
    assert rnd.settings["sampler_backend"] == "openai"
    assert rnd.settings["sampler_model"] == "tiny"
    assert rnd.settings["sampler_config"] == config
    assert SECRET not in json.dumps(rnd.settings)
    # A later change of the project's settings does not change this round's.
    Project.objects.filter(pk=project.pk).update(sampler_backend="transformers")
    rnd.refresh_from_db()
    assert rnd.settings["sampler_backend"] == "openai"


@pytest.mark.django_db
def test_a_secret_written_past_the_services_stops_the_round():
    # The admin or a shell writes the model directly; the round asks the validator.
    project = _project_with_prompts(
        sampler_backend="openai", sampler_config={**GOOD, "api_key": SECRET}
    )
    with pytest.raises(ValidationFailed, match="api_key: secrets are not stored"):
        rounds._round_for_job(_running_job(project))
    assert not Round.objects.exists()


def test_sampler_kwargs_read_the_key_from_the_named_variable(monkeypatch):
    config = {**GOOD, "api_key_env": "PL_TEST_SAMPLER_KEY", "max_retries": 2}
    monkeypatch.setenv("PL_TEST_SAMPLER_KEY", SECRET)
    kwargs = rounds.sampler_kwargs("openai", config, artifacts_dir="/a")
    assert kwargs == {
        "base_url": GOOD["base_url"],
        "max_retries": 2,
        "api_key": SECRET,
    }
    assert (
        rounds.sampler_kwargs(
            "openai",
            config,
            artifacts_dir="/a",
            environ={"PL_TEST_SAMPLER_KEY": "other"},
        )["api_key"]
        == "other"
    )
    monkeypatch.delenv("PL_TEST_SAMPLER_KEY")
    with pytest.raises(ValidationFailed, match="PL_TEST_SAMPLER_KEY, which is not set"):
        rounds.sampler_kwargs("openai", config, artifacts_dir="/a")
    # No key named: no Authorization header; local backends get the artifacts.
    assert "api_key" not in rounds.sampler_kwargs("openai", GOOD, artifacts_dir="/a")
    assert rounds.sampler_kwargs("transformers", {}, artifacts_dir="/a") == {
        "artifacts_dir": "/a"
    }


# --- a round through the openai backend, against a real HTTP server ------------------


class Served:
    """What the server saw: every request's path, Authorization header and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()


def _openai_handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path != "/v1/models":
                self._send(404, {"error": "no such path"})
                return
            self._send(200, {"object": "list", "data": [{"id": "tiny"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with served.lock:
                served.requests.append(
                    (self.path, self.headers.get("Authorization", ""), body)
                )
            if self.path == "/v1/chat/completions":
                prompt = body["messages"][-1]["content"]
            elif self.path == "/v1/completions":
                prompt = body["prompt"]
            else:
                self._send(404, {"error": "no such path"})
                return
            # Deterministic: the same request (prompt, seed) gives the same texts,
            # distinct across the n choices.
            texts = [
                f"{prompt} | seed {body['seed']} | answer {i}" for i in range(body["n"])
            ]
            if self.path == "/v1/chat/completions":
                choices = [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": t},
                        "finish_reason": "stop",
                    }
                    for i, t in enumerate(texts)
                ]
            else:
                choices = [
                    {"index": i, "text": t, "finish_reason": "stop"}
                    for i, t in enumerate(texts)
                ]
            usage = {"completion_tokens": 4 * len(texts)}
            self._send(200, {"object": "list", "choices": choices, "usage": usage})

    return Handler


@pytest.fixture
def openai_server() -> Iterator[tuple[str, Served]]:
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _openai_handler(served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run_round(project: Project) -> Job:
    job = Job.objects.create(project=project, kind="round")
    jobs.job_run(job_id=job.pk, worker="t", service=rounds.round_run)
    job.refresh_from_db()
    return job


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_a_round_through_the_openai_backend_fills_the_queue(
    openai_server, monkeypatch, mode
):
    url, served = openai_server
    monkeypatch.setenv("PL_TEST_SAMPLER_KEY", SECRET)
    config = {
        "base_url": url,
        "model": "tiny",
        "api_key_env": "PL_TEST_SAMPLER_KEY",
        "mode": mode,
        "max_concurrency": 2,
        "timeout_s": 10,
    }
    project = _project_with_prompts(sampler_backend="openai", sampler_config=config)
    job = _run_round(project)
    assert job.status == "succeeded", job.error
    rnd = Round.objects.get(project=project)
    assert rnd.status == "done"
    assert (rnd.settings["sampler_backend"], rnd.settings["sampler_model"]) == (
        "openai",
        "tiny",
    )
    # 3 prompts, one request of n=3 each, with the key from the environment.
    path = "/v1/chat/completions" if mode == "chat" else "/v1/completions"
    assert [p for p, _a, _b in served.requests] == [path] * 3
    assert {a for _p, a, _b in served.requests} == {f"Bearer {SECRET}"}
    assert {b["n"] for _p, _a, b in served.requests} == {3}
    assert {b["model"] for _p, _a, b in served.requests} == {"tiny"}
    samples = Response.objects.filter(round=rnd)
    assert samples.count() == 9
    assert set(samples.values_list("model_ref", flat=True)) == {"tiny"}
    assert all("| answer " in t for t in samples.values_list("text", flat=True))
    # The proposed pairs are in the queue: an annotator is served one.
    pairs = Comparison.objects.filter(round=rnd)
    assert pairs.count() == 3 and set(pairs.values_list("status", flat=True)) == {
        "open"
    }
    annotator = make_user(project=project)
    assignment = comparison_next_for(annotator=annotator, project=project)
    assert assignment is not None and assignment.comparison.round_id == rnd.pk


@pytest.mark.django_db
def test_a_dead_server_fails_the_round_naming_its_url():
    with socket.socket() as sock:  # a port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    config = {"base_url": url, "model": "tiny", "max_retries": 1, "timeout_s": 2}
    project = _project_with_prompts(sampler_backend="openai", sampler_config=config)
    started = time.monotonic()
    with pytest.raises(Exception, match="failed after 2 attempts") as raised:
        _run_round(project)
    assert url in str(raised.value)
    job = Job.objects.get(project=project)
    assert job.status == "failed" and f"{url}/chat/completions" in job.error
    assert not Comparison.objects.filter(project=project).exists()
    assert time.monotonic() - started < 30


@pytest.mark.django_db
def test_a_silent_server_times_out_naming_its_url():
    # It accepts connections (the kernel's backlog) and never answers: the timeout,
    # not a hang, ends the round.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        config = {"base_url": url, "model": "tiny", "max_retries": 0, "timeout_s": 0.5}
        project = _project_with_prompts(
            1, sampler_backend="openai", sampler_config=config
        )
        started = time.monotonic()
        with pytest.raises(Exception, match="Timeout") as raised:
            _run_round(project)
    assert f"{url}/chat/completions failed after 1 attempts" in str(raised.value)
    assert time.monotonic() - started < 20
    assert Job.objects.get(project=project).status == "failed"


@pytest.mark.django_db
def test_the_admin_asks_the_same_validator():
    from django.forms.models import model_to_dict

    from labelapp.admin import ProjectAdminForm

    project = make_project()
    data = {k: v for k, v in model_to_dict(project).items() if v is not None}
    data.update(
        pair_mix=json.dumps(project.pair_mix),
        selection_strategy=json.dumps(project.selection_strategy),
        rm_config="{}",
        sampler_backend="openai",
        sampler_config=json.dumps({**GOOD, "token": SECRET}),
    )
    form = ProjectAdminForm(data, instance=project)
    assert not form.is_valid()
    assert "token: secrets are not stored" in form.errors["sampler_config"][0]
    data["sampler_config"] = json.dumps(GOOD)
    form = ProjectAdminForm(data, instance=project)
    assert form.is_valid(), form.errors
    # The selection strategy too (issue 17).
    data["selection_strategy"] = json.dumps({"gap": -1})
    form = ProjectAdminForm(data, instance=project)
    assert not form.is_valid()
    assert "gap: the weight must be a number >= 0" in form.errors["selection_strategy"]


@pytest.mark.django_db
def test_the_admin_change_page_refuses_a_secret(settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path
    project = make_project()
    client = client_for(make_user(staff=True))
    url = reverse("admin:labelapp_project_change", args=[project.pk])
    page = client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {
        name: json.dumps(value) if isinstance(value, dict | list) else value
        for name, value in form.initial.items()
        if name in form.fields and value is not None and value is not False
    }
    data.update(
        {
            "sampler_backend": "openai",
            "sampler_config": json.dumps({**GOOD, "password": SECRET}),
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        }
    )
    response = client.post(url, data)
    assert response.status_code == 200  # the form again, with the error
    errors = response.context["adminform"].form.errors
    assert "password: secrets are not stored" in errors["sampler_config"][0]
    assert SECRET not in response.content.decode()
    project.refresh_from_db()
    assert project.sampler_config == {}

"""The ``openai`` backend: any OpenAI-compatible chat/completions endpoint, with
bounded concurrency, timeouts and retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from training.sampling.interface import (
    BadSamplingInput,
    Completion,
    Conversation,
    SampleProgress,
    UnknownModelError,
    _chat_text,
    sample_seed,
    validate_request,
)


class SamplingHTTPError(RuntimeError):
    """The endpoint failed after all retries."""


class OpenAISampler:
    """Any OpenAI-compatible ``/chat/completions`` (or ``/completions``) endpoint.

    Requests ask for ``n`` choices; servers that return fewer get asked again for
    the rest. At most ``max_concurrency`` requests are in flight; a request is
    retried on connection errors, timeouts, 429 and 5xx with exponential backoff.
    Token counts come from ``usage.completion_tokens`` (split over the choices by
    length when n > 1, since usage is per request) unless a ``count_tokens``
    function is given.
    """

    RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        mode: str = "chat",
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        count_tokens: Callable[[str], int] | None = None,
        check_model: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx

        if mode not in ("chat", "completions"):
            raise BadSamplingInput(
                f"mode must be 'chat' or 'completions', got {mode!r}"
            )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.mode = mode
        self.max_concurrency = max(1, max_concurrency)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.count_tokens = count_tokens
        self.check_model = check_model
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers=headers,
            limits=httpx.Limits(max_connections=self.max_concurrency),
        )
        self._model_checked = False
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def validate(
        self, conversations: Sequence[Conversation], max_new_tokens: int
    ) -> None:
        # The context length is the server's business; the model name we can check.
        if not self.check_model or self._model_checked:
            return
        try:
            response = self._client.get(f"{self.base_url}/models")
        except Exception:
            return  # unreachable now; the sampling requests report it with retries
        if response.status_code == 200:
            try:
                known = [m.get("id") for m in response.json().get("data", [])]
            except (ValueError, AttributeError):
                known = []
            if known and self.model not in known:
                raise UnknownModelError(
                    f"the endpoint {self.base_url} does not serve model "
                    f"{self.model!r}; it serves: {', '.join(map(str, known))}"
                )
        self._model_checked = True

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        path = "/chat/completions" if self.mode == "chat" else "/completions"
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.base_url + path, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in self.RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code == 404:
                raise UnknownModelError(
                    f"{self.base_url}{path} answered 404 for model {self.model!r}: "
                    f"{response.text[:200]}"
                )
            if response.status_code >= 400:
                raise SamplingHTTPError(
                    f"HTTP {response.status_code}: {response.text[:500]}"
                )
            return response.json()
        raise SamplingHTTPError(
            f"{self.base_url}{path} failed after {self.max_retries + 1} "
            f"attempts: {last}"
        )

    def _one_prompt(
        self,
        conversation: Conversation,
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> list[Completion]:
        completions: list[Completion] = []
        requests = 0
        while len(completions) < n:
            if requests > n:
                raise SamplingHTTPError(
                    f"the endpoint returned {len(completions)} of {n} choices"
                )
            payload: dict[str, Any] = {
                "model": self.model,
                "n": n - len(completions),
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "seed": seed + requests,
            }
            if self.mode == "chat":
                payload["messages"] = conversation
            else:
                payload["prompt"] = _chat_text(None, conversation)
            body = self._post(payload)
            requests += 1
            choices = body.get("choices") or []
            texts = [
                (c.get("message") or {}).get("content") or ""
                if self.mode == "chat"
                else c.get("text") or ""
                for c in choices
            ]
            usage = (body.get("usage") or {}).get("completion_tokens")
            chars = sum(len(t) for t in texts) or 1
            for choice, text in zip(choices, texts, strict=True):
                if self.count_tokens is not None:
                    count = self.count_tokens(text)
                elif isinstance(usage, int):
                    count = (
                        usage if len(texts) == 1 else round(usage * len(text) / chars)
                    )
                else:
                    count = len(text.split())
                reason = "length" if choice.get("finish_reason") == "length" else "stop"
                completions.append(Completion(text, count, reason))
        return completions[:n]

    def sample(
        self,
        conversations: Sequence[Conversation],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        progress: SampleProgress | None = None,
        first_index: int = 0,
    ) -> list[list[Completion]]:
        validate_request(conversations, n, max_new_tokens, temperature, top_p)
        self.validate(conversations, max_new_tokens)
        total, done = len(conversations) * n, 0

        def run(conv: Conversation) -> list[Completion]:
            nonlocal done
            # OpenAI's seed is an int; keep it in a range every server accepts.
            request_seed = sample_seed(seed, conv, first_index) % (2**31)
            result = self._one_prompt(
                conv, n, max_new_tokens, temperature, top_p, request_seed
            )
            with self._lock:
                done += n
                if progress is not None:
                    progress(done, total)
            return result

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(run, conversations))

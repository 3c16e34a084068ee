"""The API client of the console: one request helper and errors that say what to do."""

from __future__ import annotations

from typing import Any

import httpx

from controlplane.console.context import Context
from controlplane.errors import CliError

TIMEOUT_S = 30.0
_HINTS = {
    401: "run `edgefleet-cp login URL --token TOKEN` with a valid token",
    403: "ask an admin for a token with that role",
    404: "check the id (`list` shows what exists)",
    409: "the current state does not allow it (`show` tells the state)",
}


class ApiClient:
    """Requests to one control plane with one operator token."""

    def __init__(self, context: Context, *, http: Any = None) -> None:
        """`http`: a client of one's own (tests pass a TestClient); closed by its owner."""
        self.context = context
        self._owned = http is None
        self._http = http or httpx.Client(base_url=context.url, timeout=TIMEOUT_S)
        self._headers = {
            "Authorization": f"Bearer {context.token}",
            "User-Agent": "edgefleet-cp console",
        }

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            self._http.close()

    def call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """The decoded answer; CliError with the API's message and a hint when refused."""
        try:
            response = self._http.request(
                method, f"/api/v1{path}", json=json, params=params, headers=self._headers
            )
        except httpx.HTTPError as exc:  # a TestClient's own errors are not caught: tests see them
            raise CliError(
                f"cannot reach the control plane at {self.context.url} ({type(exc).__name__}: "
                f"{exc}); is it running, and is the URL of context {self.context.name!r} right?"
            ) from exc
        if response.status_code >= 400:
            raise CliError(refusal(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def refusal(response: httpx.Response) -> str:
    """`HTTP 409 conflict: cannot pause a rollout that is aborted (the state ...)`."""
    code, message = "", response.text[:300]
    try:
        error = response.json().get("error", {})
        code, message = str(error.get("code", "")), str(error.get("message", message))
    except (ValueError, AttributeError):
        pass
    hint = _HINTS.get(response.status_code)
    text = f"HTTP {response.status_code} {code}: {message}".replace(" :", ":")
    return f"{text} ({hint})" if hint else text

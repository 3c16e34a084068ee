"""The control plane's one exception tree: every error it raises on purpose.

    ControlPlaneError            status, code and message; the API answers them as they are
    ├── ApiError                 a request refused with its own status and code
    ├── CliError                 a command-line argument that cannot be used (400)
    ├── ConfigurationError       a setting cannot be used
    │   └── DatabaseUrlError     EDGEFLEET_CP_DATABASE_URL malformed or its driver missing
    ├── DatabaseUnavailable      the database does not answer (503)
    ├── BrokerError              the broker side (503)
    │   ├── BridgeError          the bridge could not publish or connect
    │   ├── BrokerAuthError      password/ACL files not written or the broker not reloaded
    │   └── BrokerTlsError       the CA or a certificate not loaded, created or written
    ├── EnrollmentRefused        the enrollment token is unknown, used or expired (401)
    ├── ImportRefused            a model directory or upload that cannot be imported (400;
    │                            413 for an upload over the size limit)
    ├── ModelVersionExists       name:version is already registered (409)
    ├── TelemetryQueryError      a telemetry query the store cannot answer (422)
    └── LoginRequired            the dashboard has no valid token cookie (401, a redirect)

Third-party errors (sqlalchemy, paho, cryptography) are translated once, where they are met,
with `raise ...Error(...) from exc`. The API has one handler for the tree
(controlplane/api/errors.py) and `edgefleet-cp` one catch (controlplane/cli.py).
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    """Base of the tree: an HTTP status, a stable code and a message that says what to do."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class ApiError(ControlPlaneError):
    """A request refused with its own status and code (routes, rollouts, commands)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, status=status, code=code, headers=headers)


class CliError(ControlPlaneError):
    """A command-line argument that cannot be used: printed as one line, exit status 2."""

    status, code = 400, "bad_request"


class ConfigurationError(ControlPlaneError):
    """A setting cannot be used; the message names it."""

    code = "configuration_error"


class DatabaseUrlError(ConfigurationError):
    """EDGEFLEET_CP_DATABASE_URL cannot be used: malformed, or its driver is not installed."""


class DatabaseUnavailable(ControlPlaneError):
    """The database does not answer; the ingest batch waits instead of being dropped."""

    status, code = 503, "database_unavailable"


class BrokerError(ControlPlaneError):
    """Something on the MQTT broker's side failed."""

    status, code = 503, "broker_unavailable"


class BridgeError(BrokerError):
    """The bridge could not do what was asked (e.g. publish while the broker is gone)."""


class BrokerAuthError(BrokerError):
    """The broker's password/ACL files could not be written or the broker not reloaded."""


class BrokerTlsError(BrokerError):
    """The CA or the broker certificate could not be loaded, created or written."""


class EnrollmentRefused(ControlPlaneError):
    """The enrollment token is unknown, used or expired."""

    status, code = 401, "invalid_enrollment_token"


class ImportRefused(ControlPlaneError):
    """The model directory cannot be imported; the message says why and what to do."""

    status, code = 400, "model_rejected"


class ModelVersionExists(ControlPlaneError):
    """The registry already holds this name:version."""

    status, code = 409, "model_version_exists"


class TelemetryQueryError(ControlPlaneError):
    """A telemetry query the store cannot answer; the message says what to change."""

    status, code = 422, "validation_error"


class LoginRequired(ControlPlaneError):
    """No valid token cookie: the dashboard sends the browser to the login page."""

    status, code = 401, "login_required"

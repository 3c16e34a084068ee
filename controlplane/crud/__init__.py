"""Database operations; every function takes the session first and keyword-only arguments."""

from controlplane.crud.device_reads import (
    DeviceFilter,
    device_exists,
    get_public_device,
    list_public_devices,
    matching_device_ids,
)
from controlplane.crud.devices import (
    StateReport,
    broker_credentials,
    create_device,
    delete_device,
    get_device,
    get_device_by_artifact_token,
    mark_device_states,
    revoke_device,
    update_device,
)
from controlplane.crud.models import (
    create_model_version,
    get_model_version,
    list_models,
    model_version_to_public,
)
from controlplane.crud.tokens import (
    claim_enrollment_token,
    create_api_token,
    create_enrollment_token,
    get_api_token_by_secret,
    list_api_tokens,
    list_enrollment_tokens,
    revoke_api_token,
    rotate_api_token,
)

__all__ = [
    "DeviceFilter",
    "StateReport",
    "mark_device_states",
    "broker_credentials",
    "claim_enrollment_token",
    "create_api_token",
    "create_device",
    "create_enrollment_token",
    "create_model_version",
    "delete_device",
    "get_api_token_by_secret",
    "get_device",
    "get_device_by_artifact_token",
    "get_model_version",
    "list_api_tokens",
    "list_enrollment_tokens",
    "list_models",
    "model_version_to_public",
    "revoke_api_token",
    "revoke_device",
    "rotate_api_token",
    "update_device",
    "device_exists",
    "get_public_device",
    "list_public_devices",
    "matching_device_ids",
]

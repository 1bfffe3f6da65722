"""The nats-py exceptions that mean "the bus is unavailable right now" (mapped to Transient)."""

from __future__ import annotations

import nats.errors
from nats.js import errors as js_errors

TRANSIENT_NATS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,  # includes FlushTimeoutError, DrainTimeoutError, FetchTimeoutError
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    js_errors.NoStreamResponseError,
    js_errors.ServiceUnavailableError,
    js_errors.ServerError,
    OSError,
)



def is_refusal(exc: js_errors.APIError) -> bool:
    """True when JetStream definitively refused a request (it names a JetStream error code).

    The server reports some refusals with HTTP-like code 500 (e.g. a retention change, err_code 10052),
    so the presence of ``err_code`` decides, not the class; 503 (no JetStream / no leader) is never one.
    """
    return bool(exc.err_code) and exc.code != 503


#: Transient errors plus any JetStream API error (a refused request).
TRANSIENT_OR_API_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_NATS_ERRORS, js_errors.APIError)

#: Anything nats-py raises on purpose, plus OS-level socket errors.
ANY_NATS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_NATS_ERRORS, nats.errors.Error)

"""The local HTTP API: the platform's endpoint API, served on this machine.

``python handler.py --rp_serve_api`` (or ``--waverless_serve_api``) serves
the routes a client calls on a real endpoint (PROTOCOL §15), so client code
written for RunPod or Waverless works unchanged against a laptop:

    POST /run              queue a job; it runs in the background
    POST /runsync          queue a job and wait for it (answers IN_PROGRESS on timeout)
    GET|POST /status/<id>  the job's status document (?wait= ms for it to end)
    GET|POST /stream/<id>  stream chunks produced since the previous call
    POST /cancel/<id>      cancel a queued or running job
    GET  /health           job and worker counts
    POST /purge-queue      drop every queued job
    GET  /openapi.json     these routes, described
    GET  /                 a page to run a job and watch it

Every route also answers under ``/v2/<endpoint_id>/``, the path the runpod
client library builds from ``RUNPOD_ENDPOINT_BASE_URL``.

The package is split the way waitress splits itself:

    options.py   ApiOptions: limits, threads, the address served
    endpoint.py  LocalEndpoint, JobStore, JobRecord: the jobs, run through the Runner
    webhook.py   the final status POSTed to a job's webhook (SSRF-checked)
    app.py       create_app(): routes, request parsing, the security checks
    openapi.py   the OpenAPI document
    serve.py     make_server() / ApiServer on waitress, and serve() for start()

Flask and waitress are imported only when an app or server is built, and
this package only when the API is served.
"""

from .app import BadRequest, Forbidden, WaitBudget, create_app, parse_run_request
from .endpoint import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    TERMINAL,
    TIMED_OUT,
    JobRecord,
    JobStore,
    LocalEndpoint,
    StoreFull,
    encode_json,
)
from .openapi import openapi_document
from .options import ApiOptions
from .serve import ApiServer, make_server, serve

__all__ = [
    "ApiOptions",
    "ApiServer",
    "BadRequest",
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "Forbidden",
    "IN_PROGRESS",
    "IN_QUEUE",
    "JobRecord",
    "JobStore",
    "LocalEndpoint",
    "StoreFull",
    "TERMINAL",
    "TIMED_OUT",
    "WaitBudget",
    "create_app",
    "encode_json",
    "make_server",
    "openapi_document",
    "parse_run_request",
    "serve",
]

"""The OpenAPI 3 document of the local API, served at ``/openapi.json``."""

from typing import Any

from .endpoint import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, TIMED_OUT


def openapi_document() -> dict[str, Any]:
    """An OpenAPI 3 description of the local API's routes."""
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    status_doc = {"$ref": "#/components/schemas/JobStatus"}
    error = {"description": "error", "content": _json({"$ref": "#/components/schemas/Error"})}
    run_body = {
        "required": True,
        "content": _json({"$ref": "#/components/schemas/RunRequest"}),
    }

    def reply(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": _json(schema)}

    def wait(what: str) -> dict[str, Any]:
        return {
            "name": "wait",
            "in": "query",
            "required": False,
            "schema": {"type": "integer"},
            "description": f"ms to wait for {what} (at most 300000; answered at once "
            "when too many requests are waiting already)",
        }

    def job_route(
        summary: str, schema: dict[str, Any], methods: tuple[str, ...], waits: str = ""
    ) -> dict[str, Any]:
        operation = {
            "summary": summary,
            "parameters": [job_id, wait(waits)] if waits else [job_id],
            "responses": {"200": reply(summary, schema), "403": error, "404": error},
        }
        return {method: dict(operation) for method in methods}

    stream_doc = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string"},
            "stream": {
                "type": "array",
                "items": {"type": "object", "properties": {"output": {}}},
            },
        },
    }
    paths = {
        "/run": {
            "post": {
                "summary": "Queue a job; it runs in the background",
                "requestBody": run_body,
                "responses": {
                    "200": reply("queued", status_doc),
                    "400": error,
                    "403": error,
                    "413": error,
                    "429": error,
                },
            }
        },
        "/runsync": {
            "post": {
                "summary": "Run a job and wait for it; IN_PROGRESS with the id after ?wait= ms",
                "parameters": [wait("the job to end (default 90000)")],
                "requestBody": run_body,
                "responses": {
                    "200": reply("the job's status", status_doc),
                    "400": error,
                    "403": error,
                    "413": error,
                    "429": error,
                },
            }
        },
        "/status/{job_id}": job_route(
            "The job's status document", status_doc, ("get", "post"), "the job to end"
        ),
        "/stream/{job_id}": job_route(
            "Stream chunks produced since the previous call",
            stream_doc,
            ("get", "post"),
            "a chunk or the job's end",
        ),
        "/cancel/{job_id}": job_route("Cancel a queued or running job", status_doc, ("post",)),
        "/health": {
            "get": {
                "summary": "Job and worker counts",
                "responses": {"200": reply("counts", {"type": "object"})},
            }
        },
        "/purge-queue": {
            "post": {
                "summary": "Cancel every queued job",
                "responses": {"200": reply("how many were removed", {"type": "object"})},
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "wavespeed local endpoint API",
            "version": _version(),
            "description": "Every route is also served under /v2/{endpoint_id}/.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "RunRequest": {
                    "type": "object",
                    "required": ["input"],
                    "properties": {
                        "input": {"description": "passed to the handler as job['input']"},
                        "webhook": {"type": "string", "description": "POSTed the final status"},
                        "policy": {
                            "type": "object",
                            "properties": {"executionTimeout": {"type": "integer"}},
                        },
                    },
                },
                "JobStatus": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "status": {
                            "type": "string",
                            "enum": [
                                IN_QUEUE,
                                IN_PROGRESS,
                                COMPLETED,
                                FAILED,
                                CANCELLED,
                                TIMED_OUT,
                            ],
                        },
                        "delayTime": {"type": "integer", "description": "ms queued"},
                        "executionTime": {"type": "integer", "description": "ms running"},
                        "output": {},
                        "error": {"type": "string"},
                    },
                },
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            }
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _version() -> str:
    from ... import __version__

    return __version__

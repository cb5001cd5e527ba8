"""Check the input before doing any work, and say exactly what is wrong.

Returning ``{"error": "..."}`` marks the job FAILED with that message; the
caller sees it in the status document. Plain Python checks are enough.

    python handler.py                                            # valid input
    python handler.py --test_input '{"input": {"prompt": 5}}'    # exits 1, says why
"""

import wavespeed.serverless as serverless


def validate(job_input):
    """Return (clean input, list of problems)."""
    problems = []
    if not isinstance(job_input, dict):
        return {}, ["input must be a JSON object"]
    prompt = job_input.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("prompt: required, a non-empty string")
    steps = job_input.get("steps", 20)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100:
        problems.append("steps: an integer from 1 to 100 (default 20)")
    unknown = sorted(set(job_input) - {"prompt", "steps"})
    if unknown:
        problems.append(f"unknown keys: {', '.join(unknown)}")
    return {"prompt": prompt, "steps": steps}, problems


def handler(job):
    clean, problems = validate(job["input"])
    if problems:
        return {"error": "invalid input: " + "; ".join(problems)}
    return {"prompt": clean["prompt"], "steps": clean["steps"], "image": "<would be here>"}


if __name__ == "__main__":
    serverless.start({"handler": handler})

""" Downloads its inputs, "processes" them, uploads the result. """

import os

import runpod
from runpod.serverless.utils import download_files_from_urls, rp_cleanup, rp_download, rp_upload


def handler(job):
    job_input = job["input"]
    image = rp_download.file(job_input["image_url"])
    extra = download_files_from_urls(job["id"], [job_input["image_url"], None])

    with open(image["file_path"], "rb") as handle:
        data = handle.read()
    os.makedirs("output_objects", exist_ok=True)
    result_path = os.path.join("output_objects", "result.png")
    with open(result_path, "wb") as handle:
        handle.write(data[::-1])  # the "model"

    image_url = rp_upload.upload_image(job["id"], result_path)
    rp_cleanup.clean(["output_objects"])

    return {
        "type": image["type"],
        "original_name": image["original_name"],
        "size": len(data),
        "extra": [os.path.basename(p) if p else None for p in extra],
        "image_url": image_url,
    }


runpod.serverless.start({"handler": handler})

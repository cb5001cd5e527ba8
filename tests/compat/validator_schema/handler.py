'''
Stable-diffusion style worker: validates its input against a schema.
'''

import runpod
from runpod.serverless.utils.rp_validator import validate

INPUT_SCHEMA = {
    'prompt': {
        'type': str,
        'required': True
    },
    'negative_prompt': {
        'type': str,
        'required': False,
        'default': None
    },
    'width': {
        'type': int,
        'required': False,
        'default': 512,
        'constraints': lambda width: width in [128, 256, 384, 448, 512, 576, 640, 704, 768]
    },
    'num_inference_steps': {
        'type': int,
        'required': False,
        'default': 50,
        'constraints': lambda steps: 0 < steps < 500
    },
    'guidance_scale': {
        'type': float,
        'required': False,
        'default': 7.5,
        'constraints': lambda scale: 0 < scale < 20
    },
    'seed': {
        'type': int,
        'required': False,
        'default': None
    },
}


class FakePipeline:
    """Stands in for the diffusion model."""

    def __call__(self, prompt, width, steps, guidance):
        return f"image({prompt}|{width}|{steps}|{guidance})"


MODEL = FakePipeline()


def run(job):
    job_input = job['input']

    validated_input = validate(job_input, INPUT_SCHEMA)
    if 'errors' in validated_input:
        return {"error": validated_input['errors']}
    job_input = validated_input['validated_input']

    image = MODEL(job_input['prompt'], job_input['width'],
                  job_input['num_inference_steps'], job_input['guidance_scale'])

    return {"image": image, "seed": job_input['seed'], "guidance_scale": job_input['guidance_scale']}


runpod.serverless.start({"handler": run})

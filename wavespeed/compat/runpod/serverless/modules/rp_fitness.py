"""``runpod.serverless.modules.rp_fitness``: the fitness-check registry."""

from wavespeed.serverless.fitness import clear_fitness_checks, register_fitness_check

__all__ = ["register_fitness_check", "clear_fitness_checks"]

"""Samplers: which assigned priors the losses see."""

from detcli.task.samplers.pseudo_sampler import PseudoSampler, PseudoSamplerConfig
from detcli.task.samplers.random_sampler import RandomSampler, RandomSamplerConfig
from detcli.task.samplers.sampling_result import SamplingResult

__all__ = ["PseudoSampler", "PseudoSamplerConfig", "RandomSampler", "RandomSamplerConfig",
           "SamplingResult"]

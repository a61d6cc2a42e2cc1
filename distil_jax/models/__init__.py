"""Flax BERT (teacher) and DistilBERT (student) encoders with masked-LM heads."""

from distil_jax.models.config import DTYPES, ModelConfig
from distil_jax.models.transformer import EncoderOutput, MaskedLM, MaskedLMOutput, init_params

__all__ = ["DTYPES", "EncoderOutput", "MaskedLM", "MaskedLMOutput", "ModelConfig", "init_params"]

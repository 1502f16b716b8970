"""Adaptive sampling campaigns: rounds of simulate -> collect -> retrain -> export -> bias, resumable."""

from .config import CampaignConfig, ConfigError, load_config
from .loop import Campaign

__all__ = ["Campaign", "CampaignConfig", "ConfigError", "load_config"]

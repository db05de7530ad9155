"""Campaigns: the YAML specification, grid expansion and (elsewhere) runner, slurm, aggregate."""
from rgdist.campaign.grid import GridPoint
from rgdist.campaign.spec import (
    SCHEMA_VERSION,
    Campaign,
    load_campaign,
    parse_campaign,
    parse_yaml,
)

__all__ = ["SCHEMA_VERSION", "Campaign", "GridPoint", "load_campaign", "parse_campaign", "parse_yaml"]

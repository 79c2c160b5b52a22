"""On-device apps: each a thin pipeline over ``sdk/`` plus its host-side model and recipe."""

"""End-to-end recipes driven by TOML files: the paper's experiment, the shipped pretrained models, the demo data."""
